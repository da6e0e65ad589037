# SPI NOR simulator semantics on the MicroPython unix port (same cases as test_spi_sim.py).
import spi_sim_cases as cases

HEAPSIZE = "48M"  # the W25Q128JV model holds a 16 MiB array


def test_models_geometry():
    cases.check_models_geometry()


def test_ids_and_sfdp():
    cases.check_ids_and_sfdp()


def test_reads():
    cases.check_reads()


def test_wren_and_wel():
    cases.check_wren_and_wel()


def test_busy_gating():
    cases.check_busy_gating()


def test_page_program_wraps():
    cases.check_page_program_wraps()


def test_erase_commands():
    cases.check_erase_commands()


def test_deep_power_down():
    cases.check_deep_power_down()


def test_reset():
    cases.check_reset()


def test_missing_and_stuck():
    cases.check_missing_and_stuck()


def test_clock_and_strays():
    cases.check_clock_and_strays()


def test_power_cut():
    cases.check_power_cut()
