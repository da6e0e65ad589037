"""Journal and Region checks shared by the CPython (test_journal*.py) and unix-port (mpt_journal.py) tests."""
from mptest import raises
from harness.journal_torture import JournalTorture, ProgramSpy, _Rng, record_body
from sim.nor import NorFlash, PowerCut
from umeter.store import Journal, Region, StoreError, partitions
from umeter.store.journal import FORMAT, SECTOR_HDR

SS = 4096


def payload(i, n):
    tag = ((i * 2654435761) & 0xFFFFFFFF).to_bytes(4, "little")
    return (tag * (n // 4 + 1))[:n]


def check_roundtrip_and_remount():
    f = NorFlash(8 * SS)
    j = Journal(f)
    assert j.last_seq == 0 and list(j.records()) == []
    assert j.max_payload >= 1024
    s0 = j.stats()
    for k in ("records", "oldest_seq", "free_bytes", "corrupt_skipped", "mount_bytes_read"):
        assert k in s0
    assert s0["records"] == 0
    written = []
    for i in range(120):
        p = payload(i, 1 + (i * 37) % 300)
        written.append((j.append(p), p))
    seqs = [s for s, _ in written]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs) and seqs[0] >= 1
    assert j.last_seq == seqs[-1]
    assert list(j.records()) == written
    j2 = Journal(f)
    assert list(j2.records()) == written
    st = j2.stats()
    assert st["records"] == 120 and st["oldest_seq"] == seqs[0] and st["last_seq"] == seqs[-1]
    # no gap across a clean remount
    assert seqs == list(range(1, 121))
    assert j2.next_seq == seqs[-1] + 1
    assert j2.append(b"x") == seqs[-1] + 1 and j2.last_seq == seqs[-1] + 1
    assert Journal(f).append(b"y") == seqs[-1] + 2
    # records(since=...) starts at the first seq >= since
    mid = seqs[60]
    j3 = Journal(f)
    assert [s for s, _ in j3.records(since=mid)] == seqs[60:] + [seqs[-1] + 1, seqs[-1] + 2]
    assert j3.last_seq == seqs[-1] + 2 and j3.stats()["records"] == 122


def check_payload_bounds():
    f = NorFlash(4 * SS)
    j = Journal(f)
    with raises(ValueError):
        j.append(b"")
    with raises(ValueError):
        j.append(b"\x00" * (j.max_payload + 1))
    big = payload(7, j.max_payload)
    s = j.append(big)
    s2 = j.append(big)
    assert list(Journal(f).records()) == [(s, big), (s2, big)]


def check_foreign_device_not_wiped():
    f = NorFlash(4 * SS)
    f.program(SS + 100, b"not a journal")
    image = f.read(0, f.size)
    with raises(StoreError, "not a journal"):
        Journal(f)
    assert f.read(0, f.size) == image and f.stats()["erases"] == 0
    Journal.format(f)
    assert f.read(0, f.size) == b"\xff" * f.size
    j = Journal(f)
    assert j.append(b"ok") == 1


def check_ring_retention_and_capacity():
    f = NorFlash(4 * SS)
    j = Journal(f)
    per = (SS - SECTOR_HDR) // (13 + 64)
    assert j.capacity(64) == 3 * per and j.stats()["capacity_records"] == 3 * per
    written = []
    for i in range(1000):
        p = payload(i, 64)
        written.append((j.append(p), p))
    got = list(Journal(f).records())
    # a contiguous suffix, never less than the documented capacity
    assert got == written[-len(got):]
    assert 3 * per <= len(got) <= 4 * per
    st = Journal(f).stats()
    assert st["records"] == len(got) and st["oldest_seq"] == got[0][0]
    counts = f.stats()["erase_counts"]
    assert max(counts) - min(counts) <= 1


def check_mount_reads_headers_and_head_only():
    f = NorFlash(64 * SS)
    j = Journal(f)
    for i in range(64 * 50):
        j.append(payload(i, 64))
    before = f.stats()["bytes_read"]
    j2 = Journal(f)
    read = f.stats()["bytes_read"] - before
    assert read == j2.stats()["mount_bytes_read"]
    assert read <= 64 * 15 + 16 + SS


def check_torn_append_never_reuses_seq():
    # cut every operation of one append in turn: the torn seq is never handed out again
    for op in range(1, 5):
        f = NorFlash(4 * SS, seed=op)
        j = Journal(f)
        for i in range(5):
            j.append(payload(i, 100))
        s = j.next_seq
        f.arm_cut(op)
        try:
            j.append(payload(99, 300))
            f.disarm_cut()
            continue
        except PowerCut:
            pass
        f.power_on()
        j2 = Journal(f)
        got = list(j2.records())
        assert [g[0] for g in got][:5] == [1, 2, 3, 4, 5]
        if len(got) == 6:
            assert got[5] == (s, payload(99, 300))
        assert j2.next_seq > s
        assert j2.append(b"after") > s


def check_uncommitted_record_is_invisible():
    f = NorFlash(4 * SS)
    j = Journal(f)
    j.append(b"first")
    # the commit byte is the last program of an append; stop before it by failing it outright
    real = f.program
    calls = []

    def no_commit(addr, data):
        calls.append(len(data))
        if len(data) == 1 and len(calls) > 1:
            raise PowerCut("cut before commit")
        real(addr, data)

    f.program = no_commit
    with raises(PowerCut):
        j.append(b"second")
    f.program = real
    j2 = Journal(f)
    assert [p for _, p in j2.records()] == [b"first"]
    assert j2.next_seq > 2
    s = j2.append(b"third")
    assert [p for _, p in Journal(f).records()] == [b"first", b"third"] and s > 2


def _flip(f, addr, bit):
    # test-only: flip one stored bit (either direction) behind the simulator's back
    f._mem[addr] ^= 1 << bit


def check_bit_flips(trials=40, seed=1):
    rng = _Rng(seed)
    skipped_total = 0
    for t in range(trials):
        f = NorFlash(6 * SS, seed=t)
        j = Journal(f)
        written = {}
        order = []
        for i in range(150):
            p = payload(i + t * 1000, 1 + rng.below(120))
            s = j.append(p)
            written[s] = p
            order.append(s)
        used = [a for a in range(f.size) if f._mem[a] != 0xFF]
        flips = []
        for _ in range(1 + rng.below(4)):
            a = used[rng.below(len(used))]
            if a % SS >= SECTOR_HDR:   # record areas only here; header flips below
                _flip(f, a, rng.below(8))
                flips.append(a // SS)
        j2 = Journal(f)
        got = list(j2.records())
        prev = 0
        for s, p in got:
            assert s > prev and written.get(s) == p
            prev = s
        skipped_total += j2.stats()["corrupt_skipped"]
        # records in sectors without a flip are all still there
        present = set(s for s, _ in got)
        lost_clean = 0
        for s in order:
            if s not in present and s >= got[0][0]:
                lost_clean += 1
        assert lost_clean <= 60 * len(flips)
        assert j2.append(b"still works") > max(order)
    assert skipped_total > 0


def check_header_bit_flips(trials=30, seed=2):
    rng = _Rng(seed)
    for t in range(trials):
        f = NorFlash(5 * SS, seed=t)
        j = Journal(f)
        written = {}
        for i in range(120):
            p = payload(i, 1 + rng.below(100))
            written[j.append(p)] = p
        top = j.last_seq
        sec = rng.below(5)
        _flip(f, sec * SS + rng.below(SECTOR_HDR), rng.below(8))
        j2 = Journal(f)
        for s, p in j2.records():
            assert written.get(s) == p
        assert j2.next_seq > top and j2.append(b"x") > top


def check_endurance_retires_worn_sectors():
    f = NorFlash(6 * SS, seed=5, endurance=50)
    for _ in range(50):
        f.erase_sector(2 * SS)          # sector 2 is at the end of its life before the journal starts
    j = Journal(f)
    full_capacity = j.capacity(64)
    recent = []
    for i in range(3000):
        p = payload(i, 64)
        recent.append((j.append(p), p))
        recent = recent[-200:]
        if i % 300 == 299:
            got = list(Journal(f).records())
            assert got[-len(recent):] == recent, "journal returned wrong records after wear"
    st = j.stats()
    assert st["retired_sectors"] == 1 and st["usable_sectors"] == 5
    assert j.capacity(64) < full_capacity
    j2 = Journal(f)                     # retirement is on flash, not just in RAM
    assert j2.stats()["retired_sectors"] == 1 and j2.capacity(64) == j.capacity(64)
    assert list(j2.records())[-len(recent):] == recent
    assert max(f.stats()["erase_counts"][k] for k in (0, 1, 3, 4, 5)) < 50


def check_end_of_life_raises_store_error():
    f = NorFlash(3 * SS, seed=6, endurance=3)
    j = Journal(f)
    with raises(StoreError, "worn out"):
        for i in range(5000):
            j.append(payload(i, 64))
    assert j.stats()["usable_sectors"] <= 1


def _le(v, n):
    return bytes((v >> (8 * k)) & 0xFF for k in range(n))


def forge_header(f, sec, base, gap, last, ec=1):
    """Program a valid sector header and trailer (JOURNAL.md 1.1) at sector sec, as the journal would."""
    from binascii import crc32
    tr = _le(last, 6) + _le(ec, 4) + bytes([2])
    f.program(sec * SS + SS - 31, tr + _le(crc32(tr), 4))
    main = bytes([FORMAT]) + _le(base, 6) + _le(gap, 4)
    f.program(sec * SS, main + _le(crc32(main), 4))


def check_revision_1_image_refused_untouched():
    """A sector of the earlier layout (format byte 0x4A, no trailer) is not misread: StoreError."""
    from binascii import crc32
    f = NorFlash(4 * SS)
    main = bytes([0x4A]) + _le(1, 6) + _le(0, 4)
    f.program(0, main + _le(crc32(main), 4))
    f.program(16, b"\x00" + _le(1, 6) + _le(5, 2) + b"\x12\x34\x56\x78" + b"hello")  # a revision-1 record
    before = f.read(0, 4 * SS)
    with raises(StoreError, "not a journal"):
        Journal(f)
    assert f.read(0, 4 * SS) == before


def check_sequence_exhaustion():
    from umeter.store.journal import SEQ_LIMIT
    f = NorFlash(4 * SS)
    j = Journal(f)
    j.append(b"a")
    # forge a head whose base sits at the top of the 48-bit space: append must refuse, not wrap
    forge_header(f, 1, SEQ_LIMIT - 1, 0, 1)
    j2 = Journal(f)
    assert j2.next_seq == SEQ_LIMIT - 1
    assert j2.append(b"b") == SEQ_LIMIT - 1
    with raises(StoreError, "exhausted"):
        j2.append(b"c")
    assert [s for s, _ in Journal(f).records()][-1] == SEQ_LIMIT - 1


def check_region_view():
    f = NorFlash(16 * SS)
    r = Region(f, 4 * SS, 4 * SS)
    assert (r.size, r.sector_size, r.page_size) == (4 * SS, SS, 256)
    r.program(0, b"\x00\x01")
    assert f.read(4 * SS, 3) == b"\x00\x01\xff" and r.read(0, 2) == b"\x00\x01"
    buf = bytearray(2)
    r.readinto(0, buf)
    assert buf == b"\x00\x01"
    r.erase_sector(0)
    assert f.read(4 * SS, 2) == b"\xff\xff"
    with raises(ValueError):
        r.read(4 * SS - 1, 2)
    with raises(ValueError):
        r.program(-1, b"\x00")
    with raises(ValueError):
        r.erase_sector(4 * SS)
    with raises(ValueError):
        r.erase_sector(100)
    with raises(ValueError):
        Region(f, 100, SS)
    with raises(ValueError):
        Region(f, 12 * SS, 8 * SS)
    nested = Region(r, SS, SS)
    nested.program(5, b"\x00")
    assert f.read(5 * SS + 5, 1) == b"\x00"


def check_partitions():
    f = NorFlash(32 * SS)
    p = partitions(f, [("journal", 16 * SS), ("state", 4 * SS), ("ota", None)])
    assert (p["journal"].offset, p["state"].offset, p["ota"].offset) == (0, 16 * SS, 20 * SS)
    assert p["ota"].size == 12 * SS
    p2 = partitions(f, [("a", SS, 8 * SS), ("b", 2 * SS)])
    assert (p2["a"].offset, p2["b"].offset) == (8 * SS, 9 * SS)
    for bad in ([("a", 100)], [("a", 20 * SS), ("b", 20 * SS)], [("a", None), ("b", None)],
                [("a", 4 * SS), ("a", 4 * SS)], [("a", 4 * SS, 0), ("b", 4 * SS, 2 * SS)],
                [("a", 33 * SS)], [("a", None), ("b", SS, 0)]):
        with raises(ValueError):
            partitions(f, bad)
    # journals on two regions stay apart
    ja = Journal(p["journal"])
    js = Journal(p["state"])
    for i in range(200):
        ja.append(payload(i, 64))
    assert list(js.records()) == [] and f.read(16 * SS, 4 * SS) == b"\xff" * (4 * SS)
    assert len(list(Journal(p["journal"]).records())) == 200


def check_torture(rounds, seed, sectors=10, max_ops=24):
    t = JournalTorture(seed=seed, sectors=sectors, max_ops=max_ops)
    for _ in range(rounds):
        t.round()
    s = t.summary()
    assert s["cuts"] == rounds and s["lost"] == 0 and s["corrupt"] == 0
    assert s["appended"] > rounds // 2
    # the ring wrapped many times, so retention and sector headers were cut too
    counts = t.dev.stats()["erase_counts"]
    assert min(counts) >= 2
    return s


class ZeroBitCut(ProgramSpy):
    """The armed program call (countdown) raises PowerCut before changing a single bit, after noting
    whether it carried bytes of the record being appended."""

    def __init__(self, flash):
        super().__init__(flash)
        self.countdown = 0

    def program(self, addr, data):
        if self.countdown:
            self.countdown -= 1
            if self.countdown == 0:
                self.note(addr, data)
                raise PowerCut("cut before any bit changed")
        ProgramSpy.program(self, addr, data)


def check_zero_bit_cut_never_reissues_seq():
    """A program cut before it changed any bit leaves no trace on flash, yet its seq may have been
    used: it must never be handed out again (the sealer's nonce). Cut the k-th program call of the
    appends of three boots in a row, in a fresh session and right after a mount."""
    started = 0
    for remount in (False, True):
        for k in range(1, 7):
            f = NorFlash(8 * SS, seed=k)
            dev = ZeroBitCut(f)
            j = Journal(dev)
            base = [(j.append(payload(i, 40)), payload(i, 40)) for i in range(5)]
            if remount:
                j = Journal(dev)
            acked = list(base)
            for boot in range(3):
                s = j.next_seq
                p = payload(100 * k + boot, 600)        # several page pieces
                dev.body, dev.started = record_body(s, p), False
                dev.countdown = k
                try:
                    assert j.append(p) == s
                    acked.append((s, p))
                    dev.countdown = 0
                except PowerCut:
                    pass
                j = Journal(dev)
                if dev.started:
                    started += 1
                    assert j.next_seq > s, (remount, k, boot, s, j.next_seq)
                got = list(j.records())
                assert got == acked
                assert j.last_seq == got[-1][0]
            other = j.append(b"other")
            again = list(Journal(dev).records())
            assert (other > s if dev.started else other >= s) and again[-1] == (other, b"other")
    assert started >= 10


def check_brownout_loop_keeps_history(boots=300):
    """A meter that browns out in the middle of every boot's first append: each torn slot is voided
    in place (skip byte), appends resume in the same sector, and no history is recycled."""
    f = NorFlash(8 * SS, seed=9)
    j = Journal(f)
    written = [(j.append(payload(i, 64)), payload(i, 64)) for i in range(100)]
    for b in range(boots):
        f.arm_cut(1 + b % 4)           # the intent, the body, or the commit of the boot's append
        try:
            s = j.append(payload(1000 + b, 64))
            written.append((s, payload(1000 + b, 64)))
            f.disarm_cut()
        except PowerCut:
            f.power_on()
        j = Journal(f)
        assert j.last_seq == list(j.records())[-1][0]
    got = list(j.records())
    assert [g for g in got if g in written] == written           # nothing acknowledged lost
    extra = [g for g in got if g not in written]                 # cuts after the commit got through
    assert len(extra) < boots // 3
    assert j.stats()["records"] == len(got)
    seqs = [s for s, _ in got]
    assert seqs == sorted(set(seqs))
    # torn slots were voided in place: the ring did not wrap, the first sectors were never erased
    counts = f.stats()["erase_counts"]
    assert counts[0] == 0 and counts[1] == 0 and counts[-1] == 0


def check_brownout_tiny_ring(sectors, boots, seed=1, size=3000):
    """A 2-4 sector ring of ~3 KB records (one per sector), full, then a cut inside the first append
    of every boot: torn slots fill the head, which is erased and reopened in place rather than left
    for its successor. Nothing acknowledged is dropped after the first boot (whose append already
    recycled the oldest sector, as retention does), however many boots; no seq whose program started
    comes back."""
    rng = _Rng(seed)
    f = NorFlash(sectors * SS, seed=seed)
    dev = ProgramSpy(f)
    j = Journal(dev)
    acked = [(j.append(payload(i, size)), payload(i, size)) for i in range(sectors + 1)]
    kept = None
    top = 0                            # highest seq whose program started
    for b in range(boots):
        s = j.next_seq
        p = payload(500 + b, size)
        dev.body, dev.started = record_body(s, p), False
        f.arm_cut(1 + rng.below(12))   # a 3,000-byte body takes 12 or more programs: always inside
        try:
            j.append(p)
            raise AssertionError("the cut was meant to land inside the append")
        except PowerCut:
            pass
        f.power_on()
        if dev.started and s > top:
            top = s
        j = Journal(dev)
        got = list(j.records())
        if kept is None:
            kept = got
            assert kept and kept[-1] == acked[-1] and kept == acked[-len(kept):]
            assert len(kept) >= j.capacity(size)
        assert got == kept, (sectors, b)
        assert j.last_seq == kept[-1][0] and j.next_seq > top
    assert j.stats()["records"] == len(kept) and j.stats()["oldest_seq"] == kept[0][0]
    s = j.append(b"after the brown-out")
    assert list(Journal(dev).records()) == kept + [(s, b"after the brown-out")]


def check_retention_with_frequent_cuts(cycles=200):
    """Four 64-byte appends, then a cut inside the fifth, 200 times on a 10-sector ring: each cut
    wastes only its torn bytes (rounded up to 32), so the ring keeps close to its capacity (a torn
    append used to close its sector: about 73 of 780 records were kept)."""
    rng = _Rng(5)
    f = NorFlash(10 * SS, seed=5)
    j = Journal(f)
    acked = []
    for c in range(cycles):
        for i in range(4):
            p = payload(5 * c + i, 64)
            acked.append((j.append(p), p))
        f.arm_cut(1 + rng.below(4))      # the intent, the body or the commit of the fifth
        try:
            acked.append((j.append(payload(5 * c + 4, 64)), payload(5 * c + 4, 64)))
            f.disarm_cut()
        except PowerCut:
            f.power_on()
        j = Journal(f)
    got = list(j.records())
    kept = [g for g in got if g in acked]
    assert kept == acked[-len(kept):]
    assert len(got) >= 0.8 * j.capacity(64), (len(got), j.capacity(64))
    st = j.stats()
    assert st["records"] == len(got) and st["oldest_seq"] == got[0][0] and st["last_seq"] == got[-1][0]


def check_worn_flag_survives_reboot():
    """A record program that does not take in a sector holding records marks it worn on flash; after a
    reboot the ring still retires it when it comes round instead of erasing and retrying it."""
    f = NorFlash(4 * SS, seed=3)

    class Flaky(ProgramSpy):
        fail = False

        def program(self, addr, data):
            if self.fail and len(data) > 1:
                self.fail = False
                data = bytes(data[:-1]) + b"\xff"         # the last byte does not take
            ProgramSpy.program(self, addr, data)

    dev = Flaky(f)
    j = Journal(dev)
    written = [(j.append(payload(i, 64)), payload(i, 64)) for i in range(10)]
    dev.fail = True
    written.append((j.append(payload(10, 64)), payload(10, 64)))    # retried in the next sector
    assert j.stats()["retired_sectors"] == 1
    j = Journal(dev)
    assert list(j.records()) == written
    assert j.stats()["retired_sectors"] == 1                         # the flag is on flash
    before = f.stats()["erase_counts"][0]
    for i in range(11, 400):
        written.append((j.append(payload(i, 64)), payload(i, 64)))
    assert f.stats()["erase_counts"][0] == before                   # retired, never erased again
    j = Journal(dev)
    assert j.stats()["retired_sectors"] == 1 and j.stats()["usable_sectors"] == 3
    got = list(j.records())
    assert got == written[-len(got):] and len(got) >= j.capacity(64)


class TornErase(ProgramSpy):
    """Tears the next sector erase when armed (the simulator leaves a random mix of old and 0xFF)."""
    tear = False

    def erase_sector(self, addr):
        if self.tear:
            self.tear = False
            self.f.arm_cut(1)
        self.f.erase_sector(addr)


def check_torn_reuse_erase_never_reissues(rounds=40, size=3000):
    """2-sector ring: the head holds only torn slots, so it is erased in place; tear that erase again
    and again. Its header is gone with the seqs it used, yet mount (its predecessor, claimed, vouching
    for them) never hands one out again, and the predecessor's record stays."""
    f = NorFlash(2 * SS, seed=4)
    dev = TornErase(f)
    j = Journal(dev)
    acked = [(j.append(payload(i, size)), payload(i, size)) for i in range(3)]
    top = 0
    kept = None
    reuses = 0
    for r in range(rounds):
        s = j.next_seq
        p = payload(100 + r, size)
        dev.body, dev.started = record_body(s, p), False
        # the head has no room for a second 3 KB record after a torn one: its next open is a reuse
        dev.tear = r % 3 == 2
        f.arm_cut(5 + r % 7)
        try:
            j.append(p)
            raise AssertionError("the cut was meant to land inside the append")
        except PowerCut:
            pass
        f.power_on()
        f.disarm_cut()
        if dev.started:
            top = max(top, s)
        reuses += not dev.tear and r % 3 == 2
        dev.tear = False
        j = Journal(dev)
        got = list(j.records())
        kept = kept or got
        assert got == kept == acked[-1:], r
        assert j.next_seq > top and j.last_seq == acked[-1][0]
    assert top > 0 and reuses > 3


def _appends_survive(f, n=3):
    """Append n records and remount: they are the newest records, above everything read before."""
    j = Journal(f)
    before = list(j.records())
    top = max([s for s, _ in before] + [j.last_seq])
    mine = []
    for k in range(n):
        s = j.next_seq
        assert j.append(b"mine%d" % k) == s and s > top
        top = s
        mine.append((s, b"mine%d" % k))
    j2 = Journal(f)
    assert list(j2.records())[-n:] == mine and j2.last_seq == top and j2.next_seq == top + 1
    return mine


def check_damaged_head_trailer_skips_its_seqs():
    """Found by the fuzz: a head with a valid header (base 1) and a damaged trailer (a valid header
    implies a complete trailer, so the sector was damaged), no records, a stray byte in the next
    sector. Mount must hand out no seq the head could have used (it used to say 1, then opened the
    next sector with base 1 too; the remount picked the old sector as the head and lost the appends)."""
    from umeter.store.journal import max_slots
    f = NorFlash(4 * SS)
    forge_header(f, 0, 1, 0, 0)
    f.program(SS - 40 + 23, b"\x00\x00")         # last trailer CRC byte and the worn flag
    f.program(SS + SECTOR_HDR, b"\x01")          # a stray byte: sector 1 is not blank
    image = f.read(0, f.size)
    j = Journal(f)
    assert f.read(0, f.size) == image
    assert list(j.records()) == [] and j.last_seq == 0
    assert j.next_seq >= 1 + max_slots(SS)
    mine = _appends_survive(f)
    assert mine[0][0] >= 1 + max_slots(SS)


def check_empty_worn_head_gets_a_successor_above_it():
    """A head flagged worn (trailer intact) whose walk finds no slot used: it is left for a new sector,
    which must get a base above the head's, never the same one."""
    f = NorFlash(4 * SS)
    forge_header(f, 0, 7, 0, 0)
    f.program(SS - 40 + 24, b"\x00")             # worn flag
    j = Journal(f)
    assert j.next_seq > 7
    _appends_survive(f)


def check_tied_bases_never_reissue():
    """Two sectors claim the same base: the one that holds records may be taken for the older one. No
    seq either could have used is handed out again, and appends survive the remount."""
    from umeter.store.journal import max_slots
    f = NorFlash(4 * SS)
    forge_header(f, 0, 5, 0, 0)
    forge_header(f, 2, 5, 0, 0)
    off = SECTOR_HDR
    for s in (5, 6, 7):
        body = record_body(s, b"rec%d" % s)
        f.program(2 * SS + off, b"\x00" + body)
        off += 1 + len(body)
    j = Journal(f)
    got = list(j.records())
    assert all(p == b"rec%d" % s for s, p in got)
    assert j.next_seq >= 5 + max_slots(SS)
    _appends_survive(f)


def check_junk_behind_the_head_end_never_reissues():
    """A committed record (seq 4) behind blank space in a head (base 1) whose walk ends at its first
    slot: only damage or tampering leaves bytes past the end, so the head counts as damaged. Appends
    go to a new sector above every seq the head could hold, instead of filling the blank space and
    running into that record on the next walk."""
    from umeter.store.journal import max_slots
    f = NorFlash(4 * SS)
    forge_header(f, 0, 1, 0, 0)
    f.program(SECTOR_HDR + 200, b"\x00" + record_body(4, b"zz"))
    j = Journal(f)
    assert j.next_seq >= 1 + max_slots(SS) and j.last_seq < j.next_seq
    _appends_survive(f)


def check_records_before_the_head_stay_below_its_base():
    """A sector before the head holding a record with a seq above the head's base (only tampering
    does that): it is never returned, nor taken for last_seq, so appends land after all records."""
    f = NorFlash(4 * SS)
    forge_header(f, 0, 5, 0, 0)
    forge_header(f, 1, 10, 0, 0)
    f.program(SECTOR_HDR, b"\x00" + record_body(30, b"zz"))
    j = Journal(f)
    assert list(j.records()) == [] and j.last_seq < j.next_seq
    _appends_survive(f)
