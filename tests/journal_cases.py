"""Journal and Region checks shared by the CPython (test_journal*.py) and unix-port (mpt_journal.py) tests."""
from mptest import raises
from sim.journal_torture import JournalTorture, _Rng
from sim.nor import NorFlash, PowerCut
from umeter.store import Journal, Region, StoreError, partitions

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
    assert j2.next_seq == seqs[-1] + 1
    assert j2.append(b"x") == seqs[-1] + 1
    # records(since=...) starts at the first seq >= since
    mid = seqs[60]
    assert [s for s, _ in j2.records(since=mid)] == seqs[60:] + [seqs[-1] + 1]


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
    per = (SS - 16) // (13 + 64)
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
    assert read <= 64 * 15 + SS


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
            if a % SS >= 16:           # record areas only here; header flips below
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
        _flip(f, sec * SS + rng.below(16), rng.below(8))
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


def check_sequence_exhaustion():
    from umeter.store.journal import SEQ_LIMIT
    f = NorFlash(4 * SS)
    j = Journal(f)
    j.append(b"a")
    # forge a head whose base sits at the top of the 48-bit space: append must refuse, not wrap
    from binascii import crc32
    hb = bytearray(15)
    hb[0] = 0x4A
    base = SEQ_LIMIT - 1
    for k in range(6):
        hb[1 + k] = (base >> (8 * k)) & 0xFF
    c = crc32(hb[:11])
    for k in range(4):
        hb[11 + k] = (c >> (8 * k)) & 0xFF
    f.program(SS, bytes(hb))
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
