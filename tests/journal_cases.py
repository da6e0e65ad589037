"""Journal (revision 3) and Region checks shared by the CPython (test_journal*.py) and unix-port
(mpt_journal*.py) tests. Each check_* names one property of JOURNAL.md or one failure of issue 10."""
from harness.journal_torture import JournalTorture, ProgramSpy, _Rng, bit_rot, failing_chip
from mptest import raises
from sim.nor import NorFlash, PowerCut
from umeter.store import Journal, Region, StoreError, partitions
from umeter.store import journal_layout as L

SS = 4096


def payload(i, n):
    tag = ((i * 2654435761) & 0xFFFFFFFF).to_bytes(4, "little")
    return (tag * (n // 4 + 1))[:n]


def forge_header(f, sec, base):
    """Program a valid revision-3 header (both copies) at sector sec, as the journal would."""
    h = bytearray(16)
    st = bytearray(4)
    L.encode_header(h, base >> 24, base & 0xFFFFFF, st)
    f.program(sec * SS, bytes(h[:14]))
    f.program(sec * SS + SS - 32, bytes(h[:14]))


def _flip(f, addr, bit):
    f._mem[addr] ^= 1 << bit       # test-only: one stored bit, behind the simulator's back


def check_roundtrip_and_remount():
    f = NorFlash(8 * SS)
    j = Journal(f)
    assert j.last_seq == 0 and list(j.records()) == [] and j.max_payload >= 1024
    s0 = j.stats()
    for k in ("records", "oldest_seq", "free_bytes", "corrupt_skipped", "mount_bytes_read"):
        assert k in s0
    written = []
    for i in range(120):
        p = payload(i, 1 + (i * 37) % 300)
        nxt = j.next_seq
        s = j.append(p)
        assert s == nxt
        written.append((s, p))
    seqs = [s for s, _ in written]
    assert seqs == sorted(set(seqs)) and seqs[0] == 1 and j.last_seq == seqs[-1]
    assert list(j.records()) == written
    j2 = Journal(f)
    assert list(j2.records()) == written
    st = j2.stats()
    assert st["records"] == 120 and st["oldest_seq"] == 1 and st["last_seq"] == seqs[-1]
    assert j2.next_seq == j.next_seq                    # a clean remount skips nothing
    s = j2.append(b"x")
    assert s == j.next_seq and Journal(f).append(b"y") > s
    mid = seqs[60]
    j3 = Journal(f)
    assert [q for q, _ in j3.records(since=mid)][:60] == seqs[60:]
    assert j3.stats()["records"] == 122


def check_payload_bounds():
    f = NorFlash(4 * SS)
    j = Journal(f)
    with raises(ValueError):
        j.append(b"")
    with raises(ValueError):
        j.append(b"\x00" * (j.max_payload + 1))
    big = payload(7, j.max_payload)
    s = j.append(big)
    s2 = j.append(b"\x01")
    s3 = j.append(big)
    assert list(Journal(f).records()) == [(s, big), (s2, b"\x01"), (s3, big)]


def _refused_untouched(f, match):
    image = f.read(0, f.size)
    with raises(StoreError, match):
        Journal(f)
    assert f.read(0, f.size) == image and f.stats()["erases"] == 0


def check_foreign_device_not_wiped():
    f = NorFlash(4 * SS)
    f.program(SS + 100, b"not a journal")
    _refused_untouched(f, "not a journal")
    # issue 10: a first sector starting with 16 zero bytes (a zeroed superblock) is not a retired sector
    f = NorFlash(4 * SS)
    f.program(0, b"\x00" * 16)
    f.program(SS, b"littlefs" * 4)
    _refused_untouched(f, "not a journal")
    f = NorFlash(4 * SS)
    f.program(0, b"\x00" * 16)
    _refused_untouched(f, "not a journal")
    # a journal sector does not make foreign data elsewhere on the device ours
    f = NorFlash(4 * SS)
    forge_header(f, 0, 1)
    f.program(2 * SS, b"\x12\x34" * 8)
    _refused_untouched(f, "not a journal")
    Journal.format(f)
    assert f.read(0, f.size) == b"\xff" * f.size
    assert Journal(f).append(b"ok") == 1


def check_revision_2_image_refused_untouched():
    from binascii import crc32
    f = NorFlash(4 * SS)
    main = bytes([0x4B]) + (1).to_bytes(6, "little") + (0).to_bytes(4, "little")
    f.program(0, main + crc32(main).to_bytes(4, "little"))
    f.program(16, b"\x00" + (1).to_bytes(6, "little") + (5).to_bytes(2, "little") + b"\x12\x34\x56\x78hello")
    _refused_untouched(f, "revision 2")


def check_ring_retention_and_capacity():
    f = NorFlash(4 * SS)
    j = Journal(f)
    per = (SS - 48) // 80
    assert j.capacity(64) == 3 * per and j.stats()["capacity_records"] == 3 * per
    written = []
    for i in range(1000):
        p = payload(i, 64)
        written.append((j.append(p), p))
    got = list(Journal(f).records())
    assert got == written[-len(got):] and 3 * per <= len(got) <= 4 * per
    st = Journal(f).stats()
    assert st["records"] == len(got) and st["oldest_seq"] == got[0][0]
    counts = f.stats()["erase_counts"]
    assert max(counts) - min(counts) <= 1


def check_mount_reads_headers_and_head_only():
    f = NorFlash(64 * SS)
    j = Journal(f)
    for i in range(64 * 50 + 20):
        j.append(payload(i, 64))
    before = f.stats()["bytes_read"]
    j2 = Journal(f)
    read = f.stats()["bytes_read"] - before
    assert read == j2.stats()["mount_bytes_read"]
    assert read <= 64 * 14 + 16 + SS, read


def check_torn_append_never_reuses_seq():
    """Cut every operation of one append in turn: a seq whose payload reached a program call is never
    handed out again; the records before it stay."""
    for op in range(1, 8):
        f = NorFlash(4 * SS, seed=op)
        spy = ProgramSpy(f)
        j = Journal(spy)
        acked = [(j.append(payload(i, 100)), payload(i, 100)) for i in range(5)]
        s = j.next_seq
        spy.arm()
        f.arm_cut(op)
        try:
            j.append(payload(99, 600))
            f.disarm_cut()
            continue
        except PowerCut:
            f.power_on()
        j2 = Journal(spy)
        got = list(j2.records())
        assert got[:5] == acked
        if spy.started:
            assert j2.next_seq > s
        assert j2.append(b"after") >= s and j2.last_seq == j2.stats()["last_seq"]


def check_lost_ack_two_sector_ring():
    """Issue 10: a 2-sector ring whose head holds nothing but a torn record; cut each operation of the
    next append in turn, then again after the remount: the newest acknowledged record is never lost."""
    size = 3000
    for op in range(1, 14):
        f = NorFlash(2 * SS, seed=op)
        spy = ProgramSpy(f)
        j = Journal(spy)
        acked = [(j.append(payload(i, size)), payload(i, size)) for i in range(3)]   # wrapped once
        f.arm_cut(3)                     # tear the next record's payload: the head is then full
        with raises(PowerCut):
            j.append(payload(50, size))
        f.power_on()
        top = Journal(spy).next_seq
        for cut in (op, 1 + op % 5):    # this cut, then a second one after the remount (double cut)
            j = Journal(spy)
            assert list(j.records())[-1] == acked[-1], (op, cut)
            s = j.next_seq
            assert s >= top
            spy.arm()
            f.arm_cut(cut)
            try:
                got = j.append(payload(60 + cut, size))
                f.disarm_cut()
                acked.append((got, payload(60 + cut, size)))
            except PowerCut:
                f.power_on()
            top = max(top, s + 1 if spy.started else s)
        j = Journal(spy)
        assert list(j.records())[-1] == acked[-1] and j.last_seq == acked[-1][0]
        assert j.next_seq >= top


def check_record_ending_in_ff_survives_remount():
    """Found by the torture: a 5-byte record's last pcrc byte sits alone in the next unit; when it is
    0xFF, the append point must still go past the record (it used to be taken for erased space, and the
    next append programmed over it)."""
    from binascii import crc32
    f = NorFlash(3 * SS)
    j = Journal(f)
    acked = [(j.append(b"a"), b"a")]
    for i in range(5000):
        s = j.next_seq
        p = b"%05d" % i
        rel = s - j.bl - (j.bh << 24)
        pre = s.to_bytes(6, "little") + bytes([5, 0, rel & 0xFF, rel >> 8])
        if crc32(p, crc32(pre)) >> 24 == 0xFF:
            break
    acked.append((j.append(p), p))
    j2 = Journal(f)
    acked.append((j2.append(b"next"), b"next"))
    assert list(Journal(f).records()) == acked


def check_failing_chip_bounded_damage():
    assert failing_chip(seed=1, sectors=3) >= 6
    assert failing_chip(seed=2, sectors=5, records=120) >= 6


def check_reentrant_walks():
    """Issue 10: records() carries its own position; stats(), last_seq, append() and a second walk
    during a walk hide nothing, and a walk never skips a record that is still there."""
    f = NorFlash(4 * SS)
    j = Journal(f)
    written = [(j.append(payload(i, 64)), payload(i, 64)) for i in range(100)]
    w = j.records()
    got = [next(w) for _ in range(10)]
    j.stats()
    assert j.last_seq == written[-1][0]
    inner = list(j.records())
    assert inner == written
    more = [(j.append(payload(500 + i, 64)), payload(500 + i, 64)) for i in range(5)]
    got += list(w)
    assert got == written + more
    # appends that recycle the sector a walk is in: it goes on with what is still there, in order
    w = j.records()
    first = [next(w) for _ in range(3)]
    for i in range(200):
        more.append((j.append(payload(900 + i, 64)), payload(900 + i, 64)))
    rest = list(w)
    seqs = [s for s, _ in first + rest]
    assert seqs == sorted(set(seqs))
    assert rest[-len(list(Journal(f).records())):] == list(Journal(f).records())


def check_seq_never_reissued_at_end_of_life():
    """Issue 10: once every other sector is retired, the head still holds the floor of unused seqs:
    mount never starts again at 1; appends raise StoreError ("worn out") or go above every seq."""
    f = NorFlash(3 * SS, seed=6, endurance=3)
    j = Journal(f)
    top = 0
    with raises(StoreError, "worn out"):
        for i in range(5000):
            top = j.append(payload(i, 64))
    for boot in range(4):
        j = Journal(f)
        assert j.next_seq > top and j.last_seq <= top
        try:
            s = j.append(b"late")
            assert s > top
            top = s
        except StoreError as e:
            assert "worn out" in str(e) or "exhausted" in str(e)
    # every sector but the head zeroed (retired): still not an empty journal
    f = NorFlash(4 * SS)
    j = Journal(f)
    for i in range(60):
        top = j.append(payload(i, 200))
    for sec in range(4):
        if sec != j.head:
            f.program(sec * SS, b"\x00" * 14)
    j = Journal(f)
    assert j.next_seq > top and j.stats()["usable_sectors"] == 1
    with raises(StoreError, "worn out"):
        for i in range(100):
            assert j.append(payload(i, 200)) > top


def check_one_header_bit_flip_hides_nothing():
    """Issue 10: one flipped bit anywhere in a sector header hides no record; last_seq is the newest
    record records() returns, and no seq comes back."""
    f0 = NorFlash(4 * SS)
    j = Journal(f0)
    for i in range(170):
        j.append(payload(i, 64))
    j.append(b"\x01")                   # the head: a few records
    image = bytes(f0._mem)
    want = list(j.records())
    top = j.next_seq
    for sec in range(4):
        for byte in range(14):
            for bit in (0, 3, 7):
                f = NorFlash(4 * SS)
                f._mem[:] = image
                _flip(f, sec * SS + byte, bit)
                j2 = Journal(f)
                got = list(j2.records())
                assert got == want, (sec, byte, bit)
                assert j2.last_seq == got[-1][0] and j2.next_seq >= top


def check_bit_rot_never_returns_garbage():
    bit_rot(seed=3, rounds=8)


def check_on_drop_reports_and_may_append():
    """The retention hook: on_drop(first, last) runs before the erase, names a range holding every seq
    the dropped sector held, may walk the journal and append (into the head's reserve); make_room(n)
    runs it before the caller seals, so the seq it returns is the one append gives."""
    f = NorFlash(3 * SS)
    calls = []

    def on_drop(first, last):
        present = [s for s, _ in j.records()]
        going = [s for s in present if first <= s <= last]
        assert going and going[0] == present[0] == first      # the oldest sector, from its base
        rs = j.append(b"drop %d..%d" % (first, last))
        calls.append((first, last, going, rs))

    j = Journal(f, on_drop=on_drop)
    written = []
    for i in range(300):
        p = payload(i, 64)
        s = j.make_room(len(p))
        assert j.append(p) == s
        written.append((s, p))
    assert len(calls) >= 3
    after = dict(Journal(f).records())
    first, last, going, rs = calls[-1]
    assert all(s not in after for s in going)                  # dropped after the callback returned
    assert after[rs] == b"drop %d..%d" % (first, last) and rs > last
    plain = [(s, p) for s, p in sorted(after.items()) if not p.startswith(b"drop")]
    assert plain == written[-len(plain):] and len(plain) >= j.capacity(64)


def check_sequence_exhaustion():
    f = NorFlash(4 * SS)
    j = Journal(f)
    j.append(b"a")
    top = (1 << 48) - L.max_slots(SS)
    forge_header(f, 1, top)
    j2 = Journal(f)
    assert j2.next_seq == top and j2.append(b"b") == top
    with raises(StoreError, "exhausted"):
        for _ in range(300):
            j2.append(b"c" * 200)
    assert [s for s, _ in Journal(f).records()][-1] < 1 << 48


def check_region_view():
    f = NorFlash(16 * SS)
    r = Region(f, 4 * SS, 4 * SS)
    assert (r.size, r.sector_size, r.page_size) == (4 * SS, SS, 256)
    r.program(0, b"\x00\x01")
    assert f.read(4 * SS, 3) == b"\x00\x01\xff" and r.read(0, 2) == b"\x00\x01"
    with raises(ValueError):
        r.read(4 * SS - 1, 2)
    with raises(ValueError):
        r.erase_sector(100)
    nested = Region(r, SS, SS)
    nested.program(5, b"\x00")
    assert f.read(5 * SS + 5, 1) == b"\x00"


def check_partitions():
    f = NorFlash(32 * SS)
    p = partitions(f, [("journal", 16 * SS), ("state", 4 * SS), ("ota", None)])
    ja = Journal(p["journal"])
    js = Journal(p["state"])
    for i in range(200):
        ja.append(payload(i, 64))
    assert list(js.records()) == [] and f.read(16 * SS, 4 * SS) == b"\xff" * (4 * SS)
    assert len(list(Journal(p["journal"]).records())) == 200


def check_torture(rounds, seed, sectors=10, max_ops=24, retention=False):
    t = JournalTorture(seed=seed, sectors=sectors, max_ops=max_ops, retention=retention)
    for _ in range(rounds):
        t.round()
    s = t.summary()
    assert s["cuts"] == rounds and s["lost"] == 0 and s["corrupt"] == 0
    assert s["appended"] > rounds // 2 and s["brownouts"] > 0
    return s


def check_brownout_loop_keeps_history(sectors=2, boots=120, size=3000, seed=7):
    """A cut inside the first append of every boot, no append ever completing: after the first boot
    (which may recycle the oldest sector, as retention does) nothing acknowledged is dropped."""
    rng = _Rng(seed)
    f = NorFlash(sectors * SS, seed=seed)
    spy = ProgramSpy(f)
    j = Journal(spy)
    for i in range(sectors + 1):
        j.append(payload(i, size))
    kept = None
    top = 0
    for b in range(boots):
        s = j.next_seq
        spy.arm()
        f.arm_cut(1 + rng.below(8))
        try:
            j.append(payload(500 + b, size))
            raise AssertionError("the cut was meant to land inside the append")
        except PowerCut:
            f.power_on()
        if spy.started:
            top = max(top, s)
        j = Journal(spy)
        got = list(j.records())
        kept = kept or got
        assert got == kept and j.last_seq == kept[-1][0] and j.next_seq > top, (sectors, b)
    s = j.append(b"after the brown-out")
    assert list(Journal(spy).records()) == kept + [(s, b"after the brown-out")]
