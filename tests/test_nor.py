"""NOR flash simulator under CPython, including hypothesis checks of NOR semantics."""
import nor_cases
from hypothesis import given, settings
from hypothesis import strategies as st
from sim.nor import NorFlash


def test_program_only_clears_bits():
    nor_cases.check_program_only_clears_bits()


def test_erase_sets_ff_and_counts():
    nor_cases.check_erase_sets_ff_and_counts()


def test_alignment_and_bounds():
    nor_cases.check_alignment_and_bounds()


def test_cut_tears_the_nth_operation():
    nor_cases.check_cut_tears_the_nth_operation()


def test_torn_program_statistics_over_seeds():
    prefixes, partial = nor_cases.torn_program_stats(2000)
    # Tears land anywhere: from nothing programmed to all but the last byte, unbiased on average.
    assert min(prefixes) == 0 and max(prefixes) >= 60
    assert 24 < sum(prefixes) / len(prefixes) < 40
    assert partial > 1000


def test_torn_erase_is_a_mix_over_seeds():
    assert nor_cases.torn_erase_mix(300) > 250


def test_wear_out_noticed_by_read_back():
    nor_cases.check_wear_out_noticed_by_read_back()


def test_deterministic_given_seed():
    nor_cases.check_deterministic_given_seed()


def test_file_backed(tmp_path):
    nor_cases.check_file_backed(str(tmp_path / "img.bin"))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 8191), st.binary(min_size=1, max_size=64)), max_size=20))
def test_matches_and_model(writes):
    f = NorFlash(8192)
    model = bytearray(b"\xff" * 8192)
    for addr, data in writes:
        data = data[: 256 - addr % 256]
        data = data[: 8192 - addr]
        f.program(addr, data)
        for i, b in enumerate(data):
            model[addr + i] &= b
    assert f.read(0, 8192) == bytes(model)


def test_file_only_image_passes_the_same_checks(tmp_path):
    make = nor_cases.file_only(str(tmp_path))
    nor_cases.check_program_only_clears_bits(make)
    nor_cases.check_erase_sets_ff_and_counts(make)
    nor_cases.check_alignment_and_bounds(make)
    nor_cases.check_cut_tears_the_nth_operation(make)
    prefixes, partial = nor_cases.torn_program_stats(200, make)
    assert min(prefixes) == 0 and max(prefixes) >= 60 and partial > 100
    assert nor_cases.torn_erase_mix(30, make) > 20
    nor_cases.check_wear_out_noticed_by_read_back(make)
    nor_cases.check_deterministic_given_seed(make)


def test_file_only_image_behaves_like_ram(tmp_path):
    nor_cases.check_file_image_behaves_like_ram(str(tmp_path), ops=1500)
