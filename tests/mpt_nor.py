# NOR flash simulator on the MicroPython unix port (same checks as the CPython suite).
import nor_cases
from mptest import tmpdir


def test_program_only_clears_bits():
    nor_cases.check_program_only_clears_bits()


def test_erase_sets_ff_and_counts():
    nor_cases.check_erase_sets_ff_and_counts()


def test_alignment_and_bounds():
    nor_cases.check_alignment_and_bounds()


def test_cut_tears_the_nth_operation():
    nor_cases.check_cut_tears_the_nth_operation()


def test_torn_statistics():
    prefixes, partial = nor_cases.torn_program_stats(300)
    # Tears land anywhere: from nothing programmed to all but the last byte, unbiased on average.
    assert min(prefixes) == 0 and max(prefixes) >= 60
    assert 24 < sum(prefixes) / len(prefixes) < 40
    assert partial > 150
    assert nor_cases.torn_erase_mix(50) > 40


def test_wear_out_noticed_by_read_back():
    nor_cases.check_wear_out_noticed_by_read_back()


def test_deterministic_given_seed():
    nor_cases.check_deterministic_given_seed()


def test_file_backed():
    nor_cases.check_file_backed(tmpdir() + "/img.bin")
