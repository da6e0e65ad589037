"""SpiNor driver against the SPI simulator under CPython (mpt_spi_nor.py runs the same on the unix port,
plus littlefs and the no-allocation proof, which need MicroPython)."""
import pytest
import spi_nor_cases as cases


@pytest.mark.parametrize("name", ["W25Q16JV", "W25Q64JV", "W25Q128JV"])
def test_round_trips(name):
    cases.check_round_trips(name)


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
