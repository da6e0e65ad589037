# Journal revision 3 on the MicroPython unix port, both lanes (same checks as the CPython suite).
import journal_cases as c

HEAPSIZE = "8M"
TIMEOUT = 300


def test_roundtrip_bounds_and_retention():
    c.check_roundtrip_and_remount()
    c.check_payload_bounds()
    c.check_ring_retention_and_capacity()
    c.check_mount_reads_headers_and_head_only()


def test_foreign_device_with_16_zero_bytes_is_not_wiped():
    c.check_foreign_device_not_wiped()


def test_revision_2_image_refused_untouched():
    c.check_revision_2_image_refused_untouched()


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


def test_bit_rot_and_torn_appends():
    c.check_bit_rot_never_returns_garbage()
    c.check_torn_append_never_reuses_seq()


def test_on_drop_and_sequence_limit():
    c.check_on_drop_reports_and_may_append()
    c.check_sequence_exhaustion()


def test_regions_and_partitions():
    c.check_region_view()
    c.check_partitions()


def test_brownout_loops_keep_history():
    c.check_brownout_loop_keeps_history(2, 40, seed=2)
    c.check_brownout_loop_keeps_history(3, 40, seed=3)


def test_power_cut_torture_with_retention_records():
    assert c.check_torture(120, 31, sectors=3, max_ops=32, retention=True)["drops"] > 0


def test_power_cut_torture_rings_2_3_5():
    c.check_torture(150, 11, sectors=2, max_ops=16)
    c.check_torture(150, 12, sectors=3, max_ops=24)
    c.check_torture(150, 13, sectors=5, max_ops=40)


def test_record_ending_in_ff_survives_remount():
    c.check_record_ending_in_ff_survives_remount()
