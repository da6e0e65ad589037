"""Journal revision 3 under CPython: the shared checks (journal_cases.py), the torture and the figures."""
import journal_cases as c
import pytest
from sim.nor import NorFlash
from umeter.store import Journal


def test_roundtrip_and_remount():
    c.check_roundtrip_and_remount()


def test_payload_bounds():
    c.check_payload_bounds()


def test_foreign_device_with_16_zero_bytes_is_not_wiped():
    c.check_foreign_device_not_wiped()


def test_revision_2_image_refused_untouched():
    c.check_revision_2_image_refused_untouched()


def test_ring_retention_and_capacity():
    c.check_ring_retention_and_capacity()


def test_mount_reads_headers_and_head_only():
    c.check_mount_reads_headers_and_head_only()


def test_torn_append_never_reuses_seq():
    c.check_torn_append_never_reuses_seq()


def test_lost_acknowledged_record_in_a_2_sector_ring():
    c.check_lost_ack_two_sector_ring()


def test_failing_chip_bounded_damage():
    c.check_failing_chip_bounded_damage()


def test_reentrant_walks():
    c.check_reentrant_walks()


def test_seq_never_reissued_at_end_of_life():
    c.check_seq_never_reissued_at_end_of_life()


def test_one_header_bit_flip_hides_nothing():
    c.check_one_header_bit_flip_hides_nothing()


def test_bit_rot_never_returns_garbage():
    c.check_bit_rot_never_returns_garbage()


def test_on_drop_reports_and_may_append():
    c.check_on_drop_reports_and_may_append()


def test_sequence_numbers_never_wrap():
    c.check_sequence_exhaustion()


def test_regions_and_partitions():
    c.check_region_view()
    c.check_partitions()


@pytest.mark.parametrize("sectors", [2, 3, 5])
def test_brownout_loop_keeps_history(sectors):
    c.check_brownout_loop_keeps_history(sectors, 80, seed=sectors)


# rings of 2, 3, 5 and 12 sectors; every check after every cut (harness/journal_torture.py)
@pytest.mark.parametrize("seed,sectors,max_ops,rounds", [
    (1, 2, 16, 500), (2, 3, 24, 500), (3, 5, 40, 500), (4, 12, 120, 300)])
def test_power_cut_torture(seed, sectors, max_ops, rounds):
    c.check_torture(rounds, seed, sectors=sectors, max_ops=max_ops)


@pytest.mark.parametrize("sectors", [2, 3, 5])
def test_power_cut_torture_with_retention_records(sectors):
    s = c.check_torture(300, 20 + sectors, sectors=sectors, max_ops=8 * sectors + 8, retention=True)
    assert s["drops"] > 0


def test_format_figures_64_byte_records():
    """Format properties (not timing): flash programmed per payload byte and erases per 1,000 records in
    steady state, 64-byte records, one durable append each, on a 2 MiB W25Q16JV geometry."""
    f = NorFlash(2 * 1024 * 1024)
    j = Journal(f)
    p = bytes(range(64))
    for _ in range(512 * 50 + 100):            # past one full ring pass: retention is erasing
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
    assert torture.main(["--cuts", "60", "--sectors", "3"]) == 0
    out = capsys.readouterr().out
    assert "journal: cuts 60  lost 0  corrupt 0" in out and "[journal] 60/60 cuts" in out


def test_record_ending_in_ff_survives_remount():
    c.check_record_ending_in_ff_survives_remount()


# --- retention by age (JOURNAL.md 6.1): drop_oldest / oldest_sector ------------------------------------
def test_drop_oldest_and_oldest_sector():
    import retention_cases as r

    r.check_drop_oldest_api()
    r.check_drop_oldest_refusals()
    r.check_torn_drop_is_only_accepted_next_to_the_oldest()


@pytest.mark.parametrize("full", [False, True])
def test_power_cut_in_drop_oldest_loses_nothing_kept(full):
    import retention_cases as r

    r.check_drop_oldest_power_cuts(full, seeds=(1, 2, 3, 4), cuts=range(1, 10))


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_power_cut_torture_with_drops_by_age(seed):
    import retention_cases as r

    r.check_torture_with_drops(300, seed, sectors=3 + seed % 5)
