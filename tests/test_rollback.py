"""Rollback detection logic (firmware/umeter/crypto/rollback.py) under CPython, against a fake of the
Journal API (last_seq, records(since)) and the host implementation of the seal format as the opener.
tests/mpt_rollback.py runs the same situations on the unix port with the firmware's own opener."""
import pytest
from meterctl import sealing
from umeter.crypto import TamperError, rollback

KEY = bytes(range(32))


class FakeJournal:
    def __init__(self, records=()):
        self.recs = list(records)

    @property
    def last_seq(self):
        return self.recs[-1][0] if self.recs else 0

    def records(self, since=0):
        for seq, rec in self.recs:
            if seq >= since:
                yield seq, rec


class Opener(sealing.Opener):
    """The host opener, raising the firmware's error classes (as the device opener does)."""

    def verify(self, seq, record):
        try:
            return super().verify(seq, record)
        except sealing.SealError as e:
            raise TamperError(str(e)) from None

    @staticmethod
    def tag_of(record):
        try:
            return sealing.tag_of(record)
        except sealing.SealError as e:
            raise TamperError(str(e)) from None


class FakeKeystore:
    def __init__(self):
        self.m = None
        self.writes = 0

    def mark(self):
        return self.m

    def set_mark(self, seq, tag):
        self.m = (seq, bytes(tag))
        self.writes += 1


def make(n, start=1):
    s = sealing.Sealer(KEY, 1)
    return [(seq, s.seal(seq, b"record %d" % seq)) for seq in range(start, start + n)]


def mark_at(records, seq):
    return seq, sealing.tag_of(dict(records)[seq])


def test_ok_when_flash_reaches_the_mark():
    recs = make(10)
    v = rollback.check(FakeJournal(recs), mark_at(recs, 6), Opener(KEY))
    assert v.status == rollback.OK and v.ok and not v.must_rotate
    assert (v.last_seq, v.last_tag) == (10, sealing.tag_of(recs[-1][1]))
    v = rollback.check(FakeJournal(recs), mark_at(recs, 10), Opener(KEY))
    assert v.status == rollback.OK and v.last_seq == 10


def test_fresh_without_mark():
    recs = make(3)
    v = rollback.check(FakeJournal(recs), None, Opener(KEY))
    assert v.status == rollback.FRESH and v.ok and (v.last_seq, v.last_tag) == (3, sealing.tag_of(recs[2][1]))
    v = rollback.check(FakeJournal(), None, Opener(KEY))
    assert v.status == rollback.FRESH and (v.last_seq, v.last_tag) == (0, None)


def test_older_image_is_a_rollback():
    recs = make(10)
    mark = mark_at(recs, 8)
    v = rollback.check(FakeJournal(recs[:7]), mark, Opener(KEY))  # image taken at seq 7
    assert v.status == rollback.ROLLED_BACK and v.tamper and v.must_rotate
    assert "seq 7" in v.reason and "seq 8" in v.reason and v.last_seq == 7
    v = rollback.check(FakeJournal(), mark, Opener(KEY))
    assert v.status == rollback.ROLLED_BACK and "no records" in v.reason and v.last_tag is None


def test_chain_not_reaching_the_mark_is_broken():
    recs = make(10)
    mark = mark_at(recs, 6)
    s = sealing.Sealer(KEY, 1)
    forged = [(seq, s.seal(seq, b"forged %d" % seq)) for seq in range(1, 11)]
    cases = {
        "mark record replaced": recs[:5] + forged[5:6] + recs[6:],
        "mark record missing": recs[:5] + recs[6:],
        "record after mark deleted": recs[:7] + recs[8:],
        "records after mark swapped": recs[:7] + [recs[8], recs[7]] + recs[9:],
        "tail from another history": recs[:7] + forged[7:],
        "modified record after mark": recs[:8] + [(9, recs[8][1][:-1] + b"\x00")] + recs[9:],
    }
    for name, image in cases.items():
        v = rollback.check(FakeJournal(image), mark, Opener(KEY))
        assert v.status == rollback.CHAIN_BROKEN, name
        assert v.tamper and v.must_rotate and v.reason
        assert v.last_seq == image[-1][0]  # the app resumes after the newest record anyway


def test_mark_dropped_by_ring_retention_is_reported():
    recs = make(10)
    v = rollback.check(FakeJournal(recs[6:]), mark_at(recs, 4), Opener(KEY))
    assert v.status == rollback.CHAIN_BROKEN and "missing" in v.reason


def test_verdict_event_fields_have_no_tags():
    recs = make(4)
    v = rollback.check(FakeJournal(recs[:2]), mark_at(recs, 4), Opener(KEY))
    d = v.as_dict()
    assert d == {"status": "rolled_back", "reason": v.reason, "mark_seq": 4, "flash_seq": 2}
    assert sealing.tag_of(recs[3][1]).hex() not in repr(d)


def test_checkpoint_moves_forward_only_even_after_tamper():
    ks = FakeKeystore()
    rollback.checkpoint(ks, 10, b"a" * 16)
    rollback.checkpoint(ks, 10, b"a" * 16)  # unchanged: no write
    assert ks.writes == 1
    rollback.checkpoint(ks, 12, b"b" * 16)
    with pytest.raises(ValueError, match="back"):
        rollback.checkpoint(ks, 11, b"c" * 16)
    with pytest.raises(TypeError):  # the after_tamper exception is gone
        rollback.checkpoint(ks, 3, b"d" * 16, after_tamper=True)
    assert ks.mark() == (12, b"b" * 16)


def test_newest_readable_record_counts_not_the_journals_last_seq():
    # a journal whose last_seq names a record records() does not yield (seen after torn writes)
    recs = make(10)

    class Claims(FakeJournal):
        @property
        def last_seq(self):
            return 12

    v = rollback.check(Claims(recs), mark_at(recs, 6), Opener(KEY))
    assert v.status == rollback.OK and (v.last_seq, v.last_tag) == (10, sealing.tag_of(recs[-1][1]))
    v = rollback.check(Claims(recs[:5]), mark_at(recs, 6), Opener(KEY))  # nothing at/after the mark
    assert v.status == rollback.ROLLED_BACK and (v.last_seq, v.last_tag) == (5, sealing.tag_of(recs[4][1]))
    v = rollback.check(Claims(recs), None, Opener(KEY))
    assert v.status == rollback.FRESH and v.last_seq == 10


# --- boot_verify.boot_check (the app's boot check) ------------------------------------------------------
from umeter import records  # noqa: E402
from umeter.crypto import boot_verify  # noqa: E402
from umeter.hal.keystore import HighWater  # noqa: E402


class StrictOpener(Opener):
    def open(self, seq, record):
        try:
            return super().open(seq, record)
        except sealing.SealError as e:
            raise TamperError(str(e)) from None


def snap(mwh, t=0):
    return [1, 24, t, mwh << 24, 0, 0, 0]


def meter_history(n_checkpoints, start=1, per=3, sealer=None):
    """A chain as the app writes it: per-1 profiles then one checkpoint (an anchor), repeated."""
    s = sealer or sealing.Sealer(KEY, 1)
    recs, seq = [], start
    for k in range(n_checkpoints):
        for _ in range(per - 1):
            recs.append((seq, s.seal(seq, records.profile(bytes(38)))))
            seq += 1
        recs.append((seq, s.seal(seq, records.checkpoint(snap(1000 * (k + 1), seq)), anchor=True)))
        seq += 1
    return recs, s


def hw_at(recs, seq, floor=0, epoch=1):
    return HighWater(seq, sealing.tag_of(dict(recs)[seq]), epoch, {"1.8.0": floor})


def boot(recs, mark, **kw):
    return boot_verify.boot_check(FakeJournal(recs), StrictOpener(KEY), mark, **kw)


def test_boot_check_ok_finds_the_newest_checkpoint():
    recs, _ = meter_history(5)
    v = boot(recs, hw_at(recs, 15, floor=5000))
    assert v.status == rollback.OK and v.checkpoint[0] == 15 and v.checkpoint[1][3] >> 24 == 5000
    assert v.last_seq == 15 and v.walked == 1 and v.oldest_seq == 1
    v = boot(recs, None)
    assert v.status == rollback.FRESH and v.checkpoint[0] == 15


def test_boot_check_verifies_the_mark_record_not_just_its_tag():
    recs, _ = meter_history(5)
    seq, rec = recs[14]
    bad = rec[:40] + bytes([rec[40] ^ 1]) + rec[41:]  # same tag, altered body
    v = boot(recs[:14] + [(seq, bad)], hw_at(recs, 15, floor=5000))
    assert v.status == rollback.CHAIN_BROKEN and "does not verify" in v.reason
    assert v.checkpoint[0] == 12  # the newest one that verifies, found from the oldest record
    assert boot_verify.below_floor(v.checkpoint[1], {"1.8.0": 5000}) == ["1.8.0"]
    assert boot_verify.with_floors(v.checkpoint[1], {"1.8.0": 5000}, 24)[3] == 5000 << 24
    # a mark on a plain record (not a checkpoint anchor) is refused too
    v = boot(recs, hw_at(recs, 14))
    assert v.status == rollback.CHAIN_BROKEN and "not an anchor" in v.reason


def test_boot_check_break_after_the_mark_resynchronises_at_the_next_anchor():
    recs, _ = meter_history(6)
    seq, rec = recs[10]  # a profile after the mark at 9
    recs2 = recs[:10] + [(seq, rec[:-1] + bytes([rec[-1] ^ 1]))] + recs[11:]
    v = boot(recs2, hw_at(recs, 9))
    assert v.status == rollback.CHAIN_BROKEN and "after the high-water mark" in v.reason
    assert v.checkpoint[0] == 18 and v.last_seq == 18


def test_boot_check_rolled_back_and_mark_damaged():
    recs, _ = meter_history(5)
    v = boot(recs[:9], hw_at(recs, 15, floor=5000))
    assert v.status == rollback.ROLLED_BACK and v.checkpoint[0] == 9
    assert v.problems[-1][0] == rollback.BELOW_FLOOR
    v = boot(recs, None, mark_error="both copies damaged")
    assert v.status == rollback.MARK_DAMAGED and v.tamper and v.code == 3


def test_boot_check_tells_retention_from_deletion():
    recs, s = meter_history(4)
    # ring retention dropped seqs 1..6 and sealed it, naming seq 7 and its tag
    kept_tag = sealing.tag_of(dict(recs)[7])
    ret = (13, s.seal(13, records.retention(1, 6, 7, kept_tag), anchor=True))
    more, _ = meter_history(2, start=14, sealer=s)
    after = recs[6:] + [ret] + more
    mark = hw_at(more, 19)
    v = boot(after, mark, retention_hint=13)
    assert v.status == rollback.OK and v.retention[0] == 13 and v.oldest_seq == 7
    v = boot(after, mark)  # no hint (State lost): the retention record is searched for
    assert v.status == rollback.OK and v.retention[0] == 13
    v = boot(recs[3:6] + after, mark, retention_hint=13)  # the announced drop not finished yet
    assert v.status == rollback.OK
    v = boot(after[3:], mark, retention_hint=13)  # more than the retention record covers is gone
    assert v.status == rollback.DELETED and "keeps seq 7" in v.reason
    v = boot(recs[3:], hw_at(recs, 12))  # oldest records gone, nothing dropped on purpose
    assert v.status == rollback.DELETED and "no retention record" in v.reason
    v = boot(recs, hw_at(recs, 12))  # everything there: the oldest record is the genesis anchor
    assert v.status == rollback.OK
