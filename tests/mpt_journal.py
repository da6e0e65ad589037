# Journal and regions on the MicroPython unix port (same checks as the CPython suite), plus cuts.
import journal_cases as c

HEAPSIZE = "8M"


def test_roundtrip_and_remount():
    c.check_roundtrip_and_remount()


def test_payload_bounds_and_foreign_device():
    c.check_payload_bounds()
    c.check_foreign_device_not_wiped()


def test_ring_retention_and_mount_cost():
    c.check_ring_retention_and_capacity()
    c.check_mount_reads_headers_and_head_only()


def test_torn_and_uncommitted_appends():
    c.check_torn_append_never_reuses_seq()
    c.check_uncommitted_record_is_invisible()


def test_bit_flips():
    c.check_bit_flips(trials=30)
    c.check_header_bit_flips(trials=30)


def test_endurance_and_sequence_limit():
    c.check_endurance_retires_worn_sectors()
    c.check_end_of_life_raises_store_error()
    c.check_sequence_exhaustion()


def test_regions_and_partitions():
    c.check_region_view()
    c.check_partitions()


def test_zero_bit_cuts_torn_reuse_and_worn_flag():
    c.check_zero_bit_cut_never_reissues_seq()
    c.check_torn_reuse_erase_never_reissues()
    c.check_worn_flag_survives_reboot()


def test_brownout_loops_keep_history():
    c.check_brownout_loop_keeps_history(150)
    c.check_brownout_tiny_ring(2, 60, seed=7)
    c.check_brownout_tiny_ring(4, 60, seed=8)


def test_power_cut_torture_small_ring():
    c.check_torture(300, 11, sectors=8, max_ops=16)


def test_power_cut_torture_long_runs():
    c.check_torture(200, 12, sectors=12, max_ops=120)


class _RamFlash:
    """A flash device that never allocates, to see what the journal itself allocates."""

    def __init__(self, sectors):
        self.size = sectors * 4096
        self.sector_size = 4096
        self.page_size = 256
        self.m = bytearray(b"\xff" * self.size)

    def read(self, a, n):
        return bytes(self.m[a:a + n])

    def readinto(self, a, buf):
        m = self.m
        for i in range(len(buf)):
            buf[i] = m[a + i]

    def program(self, a, d):
        m = self.m
        for i in range(len(d)):
            m[a + i] &= d[i]

    def erase_sector(self, a):
        m = self.m
        for i in range(a, a + 4096):
            m[i] = 0xFF


def _alloc_per_append(size):
    import gc

    from umeter.store import Journal
    j = Journal(_RamFlash(8))
    p = bytes(size)
    for _ in range(3):
        j.append(p)
    gc.collect()
    gc.disable()
    before = gc.mem_alloc()
    for _ in range(20):
        j.append(p)
    used = (gc.mem_alloc() - before) // 20
    gc.enable()
    return used


def test_append_allocates_no_buffers():
    # small transient objects only: the same for a 16-byte and a 1,000-byte payload, far below either
    small = _alloc_per_append(16)
    big = _alloc_per_append(1000)
    assert small < 400 and big < 400, (small, big)


def test_revision_1_image_refused_untouched():
    c.check_revision_1_image_refused_untouched()


def test_adversarial_heads():
    c.check_damaged_head_trailer_skips_its_seqs()
    c.check_empty_worn_head_gets_a_successor_above_it()
    c.check_tied_bases_never_reissue()
    c.check_junk_behind_the_head_end_never_reissues()
    c.check_records_before_the_head_stay_below_its_base()
