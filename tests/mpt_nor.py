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


def test_file_only_image_passes_the_same_checks():
    make = nor_cases.file_only(tmpdir())
    nor_cases.check_program_only_clears_bits(make)
    nor_cases.check_erase_sets_ff_and_counts(make)
    nor_cases.check_alignment_and_bounds(make)
    nor_cases.check_cut_tears_the_nth_operation(make)
    prefixes, partial = nor_cases.torn_program_stats(100, make)
    assert min(prefixes) == 0 and max(prefixes) >= 60 and partial > 50
    assert nor_cases.torn_erase_mix(20, make) > 12
    nor_cases.check_wear_out_noticed_by_read_back(make)
    nor_cases.check_deterministic_given_seed(make)


def test_file_only_image_behaves_like_ram():
    nor_cases.check_file_image_behaves_like_ram(tmpdir())


def test_file_only_image_keeps_a_16_mib_chip_off_the_heap():
    import gc

    from sim.nor import NorFlash

    gc.collect()
    before = gc.mem_free()
    f = NorFlash(16 * 1024 * 1024, path=tmpdir() + "/big.img")
    f.program(16 * 1024 * 1024 - 4, b"\x00\x01\x02\x03")
    gc.collect()
    used = before - gc.mem_free()
    assert f.read(16 * 1024 * 1024 - 6, 6) == b"\xff\xff\x00\x01\x02\x03"
    f.close()
    assert used < 24 * 1024, used  # erase counters (4 B per sector) and buffers, not the 16 MiB image
