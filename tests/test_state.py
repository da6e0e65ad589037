"""State (key -> latest value store) under CPython: API, compaction, wear, corruption, format safety."""
import state_cases
from state_cases import RamDev


def ram(sectors):
    return RamDev(bytearray(b"\xff" * (sectors * 4096)))


def test_blank_formats_and_roundtrips():
    state_cases.check_blank_formats_and_roundtrips()


def test_limits():
    state_cases.check_limits()


def test_compaction_keeps_latest_and_spreads_wear():
    state_cases.check_compaction_keeps_latest_and_spreads_wear()


def test_full_is_refused_cleanly():
    state_cases.check_full_is_refused_cleanly()


def test_foreign_device_refused_and_untouched():
    state_cases.check_foreign_device_refused_and_untouched()


def test_geometry_mismatch_refused():
    state_cases.check_geometry_mismatch_refused()


def test_mount_cost_bounded():
    state_cases.check_mount_cost_bounded()


def test_get_into():
    state_cases.check_get_into()


def test_torn_put_leaves_no_hole():
    state_cases.check_torn_put_leaves_no_hole()


def test_runtime_corruption_skipped():
    state_cases.check_runtime_corruption_skipped(ram)


def test_header_copy_flip_survives():
    state_cases.check_header_copy_flip_survives(ram)


def test_bit_flips_skipped_and_counted():
    flagged = state_cases.check_bit_flips(ram, 150)
    assert flagged >= 30          # most flips land in live data and are noticed


def test_format_cut_never_resurrects():
    state_cases.check_format_cut_never_resurrects()


def test_worn_sector_skipped():
    state_cases.check_worn_sector_skipped()


def test_on_spi_nor_driver():
    state_cases.check_on_spi_nor_driver()


def test_first_format_cut_mounts():
    assert state_cases.check_first_format_cut_mounts() >= 12


def test_foreign_region_refused_untouched():
    state_cases.check_foreign_regions_refused_untouched()


def test_cut_copy_b_finished():
    state_cases.check_cut_copy_b_finished(ram)


def test_silent_program_failures_keep_acknowledged_values():
    state_cases.check_silent_program_failures_keep_acknowledged_values()


def test_brownout_loop():
    state_cases.check_brownout_loop()
