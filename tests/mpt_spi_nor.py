# SpiNor driver against the SPI simulator on the MicroPython unix port, plus littlefs on it and the
# no-allocation proof of the hot paths.
import micropython
import spi_nor_cases as cases
import vfs

HEAPSIZE = "48M"  # the W25Q128JV model holds a 16 MiB array


def test_w25q16jv_round_trips():
    cases.check_round_trips("W25Q16JV")


def test_w25q64jv_round_trips():
    cases.check_round_trips("W25Q64JV")


def test_w25q128jv_round_trips():
    cases.check_round_trips("W25Q128JV")


def test_wrap_caught():
    cases.check_wrap_caught()


def test_timeouts():
    cases.check_timeouts()


def test_busy_at_start():
    cases.check_busy_at_start()


def test_missing_chip():
    cases.check_missing_chip()


def test_wren_ignored():
    cases.check_wren_ignored()


def test_power_down():
    cases.check_power_down()


def test_verify():
    cases.check_verify()


def test_fallback_table():
    cases.check_fallback_table()


def test_block_device():
    cases.check_block_device()


def test_hot_paths_do_not_allocate():
    cases.check_hot_paths_do_not_allocate(micropython.heap_lock, micropython.heap_unlock)


def test_littlefs_w25q16jv():
    cases.check_littlefs(vfs, "W25Q16JV")


def test_littlefs_w25q128jv():
    cases.check_littlefs(vfs, "W25Q128JV")
