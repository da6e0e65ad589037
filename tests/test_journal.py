"""Journal and the power-cut torture under CPython (shared checks in journal_cases.py)."""
import journal_cases as c
import pytest
from sim.nor import NorFlash
from umeter.store import Journal


def test_roundtrip_and_remount():
    c.check_roundtrip_and_remount()


def test_payload_bounds():
    c.check_payload_bounds()


def test_foreign_device_raises_and_is_not_wiped():
    c.check_foreign_device_not_wiped()


def test_ring_retention_and_capacity():
    c.check_ring_retention_and_capacity()


def test_mount_reads_headers_and_head_only():
    c.check_mount_reads_headers_and_head_only()


def test_torn_append_never_reuses_seq():
    c.check_torn_append_never_reuses_seq()


def test_uncommitted_record_is_invisible():
    c.check_uncommitted_record_is_invisible()


def test_bit_flips_in_records_are_skipped_and_counted():
    c.check_bit_flips(trials=150)


def test_bit_flips_in_sector_headers():
    c.check_header_bit_flips(trials=150)


def test_worn_sector_is_retired_and_journal_continues():
    c.check_endurance_retires_worn_sectors()


def test_end_of_life_is_a_store_error():
    c.check_end_of_life_raises_store_error()


def test_sequence_numbers_never_wrap():
    c.check_sequence_exhaustion()


# 2,400 cuts in all: small rings (wrap every few rounds), a larger one with longer runs between cuts.
@pytest.mark.parametrize("seed,sectors,max_ops,rounds", [
    (1, 8, 16, 700), (2, 10, 24, 700), (3, 16, 60, 500), (4, 12, 200, 500)])
def test_power_cut_torture(seed, sectors, max_ops, rounds):
    s = c.check_torture(rounds, seed, sectors=sectors, max_ops=max_ops)
    assert s["inflight_kept"] > 0          # cuts after the commit byte happened too


def test_format_figures_64_byte_records():
    """Format properties (not timing): flash programmed per payload byte and erases per 1,000 records
    in steady state, 64-byte records, one durable append each, on a 2 MiB W25Q16JV geometry."""
    f = NorFlash(2 * 1024 * 1024)
    j = Journal(f)
    per_sector = (4096 - 16) // (13 + 64)
    warm = 512 * per_sector + 100              # past one full ring pass: retention is erasing
    p = bytes(range(64))
    for _ in range(warm):
        j.append(p)
    f.reset_stats()
    n = 5000
    for _ in range(n):
        j.append(p)
    s = f.stats()
    assert s["bytes_programmed"] / (n * 64) <= 1.25
    assert s["erases"] * 1000 / n <= 22


def test_torture_cli_prints_cuts_lost_corrupt(capsys):
    from meterctl import torture
    assert torture.main(["--cuts", "60", "--sectors", "8"]) == 0
    out = capsys.readouterr().out
    assert "journal: cuts 60  lost 0  corrupt 0" in out and "[journal] 60/60 cuts" in out


def test_zero_bit_cut_never_reissues_seq():
    c.check_zero_bit_cut_never_reissues_seq()


def test_brownout_loop_keeps_history():
    c.check_brownout_loop_keeps_history()


@pytest.mark.parametrize("sectors", [2, 3, 4])
def test_brownout_loop_tiny_ring_drops_nothing(sectors):
    c.check_brownout_tiny_ring(sectors, 150, seed=sectors)


def test_torn_in_place_erase_never_reissues_seq():
    c.check_torn_reuse_erase_never_reissues()


def test_retention_with_frequent_cuts():
    c.check_retention_with_frequent_cuts()


def test_worn_flag_survives_reboot():
    c.check_worn_flag_survives_reboot()


def test_revision_1_image_refused_untouched():
    c.check_revision_1_image_refused_untouched()


def test_damaged_head_trailer_skips_its_seqs():
    c.check_damaged_head_trailer_skips_its_seqs()


def test_empty_worn_head_gets_a_successor_above_it():
    c.check_empty_worn_head_gets_a_successor_above_it()


def test_tied_bases_never_reissue():
    c.check_tied_bases_never_reissue()


def test_junk_behind_the_head_end_never_reissues():
    c.check_junk_behind_the_head_end_never_reissues()


def test_records_before_the_head_stay_below_its_base():
    c.check_records_before_the_head_stay_below_its_base()
