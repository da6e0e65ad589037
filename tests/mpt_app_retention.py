# Ring retention is provable, deletion is tamper (issue 11 item 4), and damaged keystore blobs never stop
# the meter (item 7): the real app on the unix port with a 6-sector journal.
from mpt_integrity_kit import (SS, SmallBoard, advance, boot, damage_blob, erase, newest_hwm, not_below,
                               opened, position, regs)
from mptest import tmpdir
from umeter import records
from umeter.app import Meter
from umeter.crypto.seal import Opener
from umeter.store import journal_layout as L

HEAPSIZE = "16M"


def _watch_drops(m):
    """Wrap the journal's on_drop: at each drop, check that the retention record is on flash (the newest
    record, verifying on its own) while every seq it names is still readable, i.e. before the erase."""
    calls = []
    inner = m.journal.on_drop

    def on_drop(first, last):
        try:
            inner(first, last)
        finally:
            got = list(m.journal.records(since=first))
            seq, rec = got[-1]
            typ, f = records.decode(Opener(m.keystore).open(seq, rec))
            assert typ == records.REC_RETENTION and (f["first_dropped"], f["last_dropped"]) == (first, last)
            assert got[0][0] <= f["oldest_kept"] or f["oldest_kept"] == 0
            assert got[0][0] >= first and got[0][0] <= last  # the dropped records are still there
            calls.append((first, last, seq))

    m.journal.on_drop = on_drop
    return calls


def _full_ring(name):
    board = SmallBoard(tmpdir() + "/" + name)
    m = Meter(board)
    calls = _watch_drops(m)
    while len(calls) < 3:
        advance(m, 5, samples=200)
    assert m.retained == len(calls)
    return board, m, calls


def test_retention_sealed_before_every_drop_and_proven_at_boot():
    board, m, calls = _full_ring("ret")
    before = regs(m)
    kinds = [typ for _, typ, _ in opened(m)]
    assert kinds.count(records.REC_RETENTION) >= 2  # the oldest ones went with later drops
    for n in range(2):
        m = boot(board)
        st = m.status()
        assert st["tamper"] is None and st["tamper_log"]["count"] == 0, st["tamper"]
        assert st["verification"]["retention_seq"] == calls[-1][2] or n > 0
        assert st["verification"]["oldest_seq"] > calls[-1][1] or n > 0
        not_below(regs(m), before)
        _watch_drops(m)
        advance(m, 40, samples=200)  # more drops on this boot
        before = regs(m)


def test_oldest_sector_erased_with_the_ring_full_is_deletion():
    board, m, calls = _full_ring("del_full")
    before = regs(m)
    oldest = list(m.journal.records())[0][1]
    from mpt_integrity_kit import sector_of

    erase(board.dev, sector_of(board.dev, oldest), SS)
    for n in range(3):
        m = boot(board)
        st = m.status()
        assert st["tamper"] is not None, n
        if n == 0:
            assert st["tamper"]["status"] == "deleted" and "oldest records missing" in st["tamper"]["reason"]
        assert st["tamper_log"]["active"]
        not_below(regs(m), before)
        advance(m, 1)


def test_oldest_sector_erased_with_the_ring_not_full_is_deletion():
    board = SmallBoard(tmpdir() + "/del_part")
    m = Meter(board)
    while m.journal.last_seq < 70:  # more than two sectors, far from the 6 of the ring
        advance(m, 5, samples=200)
    assert m.retained == 0
    m = boot(board)
    assert m.status()["tamper"] is None  # the oldest record is the genesis anchor: nothing dropped
    before = regs(m)
    erase(board.dev, 0, SS)
    m = boot(board)
    st = m.status()
    assert st["tamper"]["status"] == "deleted", st["tamper"]
    not_below(regs(m), before)


def _run(name):
    board = SmallBoard(tmpdir() + "/" + name)
    m = Meter(board)
    advance(m, 6)
    assert regs(m)["1.8.0"] > 300
    return board, m, regs(m), position(m)


def _meters_on(m):
    t = m.engine.t
    m.run_samples(4000 * 2)
    assert m.engine.t >= t + 8000 and m.status()["window"]["32.7.0"] > 229.0


def test_damaged_keys_blob_meters_from_the_floors_and_says_what_to_do():
    board, m, before, _ = _run("ks_keys")
    damage_blob(board, "keys")
    m = boot(board)
    st = m.status()
    assert "meterctl provision" in st["refusal"] and "damaged" in st["key"]["damage"]["keys"]
    assert st["key"]["provisioned"] is False and st["key_storage"]["kind"] == "simulated"
    not_below(regs(m), before)  # no key to open a checkpoint: the mark's floors hold the registers
    assert st["registers_floored"]
    _meters_on(m)
    assert m.status()["records_stored"] == 0 and m.status()["records_refused"] > 0


def test_one_damaged_mark_copy_leaves_an_older_genuine_mark():
    board, m, before, pos = _run("ks_hwm1")
    damage_blob(board, newest_hwm(board))
    m = boot(board)
    st = m.status()
    assert st["refusal"] is None and st["tamper"] is None, st["tamper"]
    not_below(regs(m), before)
    assert (0, 0) < position(m) < pos
    _meters_on(m)
    advance(m, 1)
    assert position(m) > pos


def test_both_mark_copies_damaged_is_tamper_and_the_meter_goes_on():
    board, m, before, pos = _run("ks_hwm2")
    damage_blob(board, "hwm0")
    damage_blob(board, "hwm1")
    m = boot(board)
    st = m.status()
    assert st["tamper"]["status"] == "mark_damaged" and "damaged" in st["mark"]["error"]
    assert st["refusal"] is None
    not_below(regs(m), before)  # from the newest verified checkpoint
    _meters_on(m)
    advance(m, 1)
    assert m.status()["mark"]["error"] is None and position(m) > pos
    m = boot(board)
    assert m.status()["tamper"]["status"] == "recorded" and m.status()["tamper_log"]["count"] == 1


def test_damaged_tamper_log_counts_as_tamper_and_is_rewritten():
    board, m, before, pos = _run("ks_tamp")
    m.keystore.record_tamper(2, 1, 5, 6)  # a log exists
    damage_blob(board, "tamp0")  # the only copy so far
    m = boot(board)
    st = m.status()
    assert st["tamper"]["status"] == "recorded" and st["tamper_log"]["active"]
    assert st["tamper_log"]["damaged"] is False and st["tamper_log"]["count"] >= 2
    assert st["tamper_log"]["events"][-1]["code"] == 6
    not_below(regs(m), before)
    _meters_on(m)


def test_status_shows_key_storage_mark_and_verification():
    board, m, before, pos = _run("status")
    m = boot(board)
    st = m.status()
    assert st["key_storage"]["kind"] == "simulated" and st["key_storage"]["note"]
    assert (st["mark"]["epoch"], st["mark"]["seq"]) == pos and st["mark"]["floors_wh"]["1.8.0"] > 0
    v = st["verification"]
    assert v["walked"] >= 1 and v["verified"] >= 1 and v["oldest_seq"] == 1
    assert st["tamper_log"] == {"count": 0, "active": False, "damaged": False, "events": []}


def test_first_record_of_every_sector_verifies_on_its_own():
    # After a drop the oldest kept record has no predecessor on flash: as an anchor it still verifies
    # (export --strict withholds nothing). Filled with events, never anchors of their own.
    board = SmallBoard(tmpdir() + "/anchors")
    m = Meter(board)
    calls = _watch_drops(m)
    i = 0
    while len(calls) < 2:
        m.event(records.EV_FAULT, i, "event %d to fill sectors" % i)
        i += 1
    dev = m.journal.dev
    bases = set()
    for s in range(dev.size // SS):
        h = dev.read(s * SS, L.HDR_LEN)
        if L.has_magic(h):
            bases.add(L.seq_int(L.get_hi(h, 4), L.get_lo(h, 4)))  # a sector's first seq
    firsts = [(seq, rec) for seq, rec in m.journal.records() if seq in bases]
    assert len(firsts) >= 3, (bases, len(list(m.journal.records())))
    for seq, rec in firsts:
        assert Opener(m.keystore).open(seq, rec) is not None, seq  # a fresh opener: no chain before it
