# Retention by age and minimisation (issue 14 item 4) on the unix port, both lanes: the journal's
# drop_oldest with power cuts (tests/retention_cases.py), retention.expire on the real app (its own
# on_drop seals the retention record; the next boot proves it), and the profile field mask.
import retention_cases as rc
from mpt_integrity_kit import SmallBoard, advance, boot, opened
from mptest import raises, tmpdir
from umeter import records, retention
from umeter.app import Meter
from umeter.crypto.seal import Opener
from umeter.metering import obis
from umeter.metering import profile as P

HEAPSIZE = "16M"
TIMEOUT = 300


def test_drop_oldest_api_and_power_cuts():
    rc.check_drop_oldest_api()
    rc.check_drop_oldest_refusals()
    rc.check_torn_drop_is_only_accepted_next_to_the_oldest()
    rc.check_drop_oldest_power_cuts(False, seeds=(5,), cuts=range(1, 7))
    rc.check_drop_oldest_power_cuts(True, seeds=(6,), cuts=range(1, 7))


def test_power_cut_torture_with_drops_by_age():
    rc.check_torture_with_drops(120, 21, sectors=5)


def _live(m):
    return sum(1 for k in m.journal.kinds if k == 1)


def _bound(m, last):
    """Engine time of the first checkpoint at or after seq `last` (what RECORDS.md 6 bounds a record by)."""
    for seq, typ, f in opened(m):
        if seq >= last and typ == records.REC_CHECKPOINT:
            return f["snapshot"][2]
    raise AssertionError("no checkpoint after seq %d" % last)


def test_expire_drops_what_is_older_than_the_retention_and_proves_it():
    board = SmallBoard(tmpdir() + "/expire")
    m = Meter(board)
    while _live(m) < 4:                         # four of six sectors: the ring never dropped anything
        advance(m, 4, samples=200)
    assert m.retained == 0
    before = list(m.journal.records())
    first, last = m.journal.oldest_sector()
    assert first == before[0][0] == 1
    now = m.engine.t
    keep = now - _bound(m, last)                # exactly the age of the oldest sector's newest record
    op = Opener(m.keystore)
    assert retention.expire(m.journal, op, now, keep + 1) == 0     # one sample too young: kept
    assert list(m.journal.records())[0][0] == 1
    assert retention.expire(m.journal, op, now, keep) == 1         # the next sector is younger
    after = list(m.journal.records())
    assert after[0][0] == last + 1
    assert [r for r in before if r[0] > last] == after[:len(before) - last]    # newer records untouched
    rets = [(seq, f) for seq, typ, f in opened(m) if typ == records.REC_RETENTION]
    assert len(rets) == 1 and m.retained == 1
    seq, f = rets[0]
    assert (f["first_dropped"], f["last_dropped"], f["oldest_kept"]) == (first, last, last + 1)
    assert retention.expire(m.journal, op, now, keep) == 0         # nothing more is due
    for _ in range(2):                          # the boot check: retention, not deletion, at every boot
        m = boot(board)
        st = m.status()
        assert st["tamper"] is None, st["tamper"]
        assert st["verification"]["oldest_seq"] == last + 1 and st["verification"]["retention_seq"] == seq
        advance(m, 1, samples=200)
    # a short retention: at most MAX_DROPS sectors per call, never the head or the newest record
    n = _live(m)
    assert retention.expire(m.journal, Opener(m.keystore), m.engine.t, 1) == retention.MAX_DROPS
    assert _live(m) == n - retention.MAX_DROPS
    while retention.expire(m.journal, Opener(m.keystore), m.engine.t, 1):
        pass
    assert m.journal.oldest_sector() is None and list(m.journal.records())[-1][0] == m.journal.last_seq
    m = boot(board)
    assert m.status()["tamper"] is None, m.status()["tamper"]


def test_power_cut_in_expire_on_the_app_keeps_the_period_and_is_no_tamper():
    """A cut at each program/erase of an expire on the real app: at the next boot nothing newer than the
    dropped sector is lost, the boot check finds no tamper (the retention record covers the drop, or
    the drop did not start), and the next expire finishes the job."""
    from sim.nor import PowerCut

    # an expire's flash operations: the retention record (2 programs), the State's hint (3), unmake (2),
    # the erase (1)
    for cut in range(1, 9):
        board = SmallBoard(tmpdir() + "/cut%d" % cut)
        m = Meter(board)
        while _live(m) < 3:
            advance(m, 4, samples=200)
        before = list(m.journal.records())
        first, last = m.journal.oldest_sector()
        keep = m.engine.t - _bound(m, last)
        board.dev.arm_cut(cut)
        try:
            retention.expire(m.journal, Opener(m.keystore), m.engine.t, keep)
            board.dev.disarm_cut()
        except PowerCut:
            pass
        board.dev.power_on()
        m = boot(board)
        st = m.status()
        assert st["tamper"] is None, (cut, st["tamper"])
        got = dict(m.journal.records())
        assert all(got.get(seq) == rec for seq, rec in before if seq > last), cut
        assert min(got) in (first, last + 1), (cut, min(got))
        retention.expire(m.journal, Opener(m.keystore), m.engine.t, keep)
        assert min(dict(m.journal.records())) == last + 1, cut
        m = boot(board)
        assert m.status()["tamper"] is None, (cut, m.status()["tamper"])


def test_expire_keeps_everything_without_a_retention_or_a_key():
    board = SmallBoard(tmpdir() + "/keep")
    m = Meter(board)
    while _live(m) < 3:
        advance(m, 4, samples=200)
    n = len(list(m.journal.records()))
    assert retention.expire(m.journal, Opener(m.keystore), m.engine.t, 0) == 0
    assert retention.expire(m.journal, Opener(m.keystore), m.engine.t, m.engine.t) == 0
    assert retention.expire(m.journal, lambda seq, rec: None, m.engine.t, 1) == 0   # nothing opens: kept
    assert len(list(m.journal.records())) == n


def test_profile_field_mask_round_trips():
    import struct

    raw = struct.pack(P.PROFILE_FORMAT, 2, 8, 15, 900, 1, 2, 3, 4, 22000, 23000, 24000, 5000000, 77)
    assert records.FIELDS_ALL == P.FIELDS_ALL                   # records.py keeps its own copy (no import)
    assert records.profile(raw) == b"\x01" + raw                 # the default stores today's record
    sizes = {}
    for mask in range(P.FIELDS_ALL + 1):
        body = records.profile(raw, mask)[1:]
        d = P.decode_profile(body)
        sizes[mask] = len(body)
        assert d[obis.A_IMPORT] == 1 and d[obis.R_EXPORT] == 4 and d["t_end_s"] == 900 and d["flags"] == 8
        assert (d[obis.VOLTAGE_MAX] == 240.0) == bool(mask & P.FIELD_VOLTAGE)
        assert (d[obis.VOLTAGE_MIN] is None) == (not mask & P.FIELD_VOLTAGE)
        assert (d[obis.DEMAND_MAX] == 5000.0) == bool(mask & P.FIELD_DEMAND)
        assert (d["sat_samples"] == 77) == bool(mask & P.FIELD_SATURATION)
        assert P.minimise(body, mask) == body
    assert sizes[P.FIELDS_ENERGY] == 25 and sizes[P.FIELDS_ALL] == P.PROFILE_SIZE
    for bad in (8, -1, 255):
        with raises(ValueError, "mask"):
            records.profile(raw, bad)
    v3 = records.profile(raw, P.FIELD_DEMAND)[1:]
    with raises(ValueError, "version"):
        P.decode_profile(v3[:-1])                  # a length that does not match its mask
    with raises(ValueError, "version"):
        P.decode_profile(v3[:4] + b"\x08" + v3[5:])  # an unknown field bit
