# Rollback detection: the high-water mark (seq and tag of a durable record, kept in MCU-internal storage)
# against the external flash at boot. Pure logic on duck types (journal: last_seq, records(since);
# opener: trust/verify/tag_of/last_seq/last_tag; keystore: mark/set_mark), so it runs under CPython too.
from umeter.crypto import SealError

OK = "ok"                      # the flash reaches the mark and the chain from it verifies
FRESH = "fresh"                # no mark yet (first boot after provisioning)
ROLLED_BACK = "rolled_back"    # the newest record on flash is older than the mark (or the flash is empty)
CHAIN_BROKEN = "chain_broken"  # the mark's record is missing or differs, or the chain after it fails


class Verdict:
    """Outcome of check(). last_seq/last_tag: the newest record on flash (tag None if there is none
    or it is unreadable), for Sealer.resume(). must_rotate: the app must start a new key epoch before
    sealing again, because sequence numbers above the flash's newest may already have been used."""

    def __init__(self, status, reason, mark_seq, last_seq, last_tag):
        self.status = status
        self.reason = reason
        self.mark_seq = mark_seq
        self.last_seq = last_seq
        self.last_tag = last_tag

    @property
    def ok(self):
        return self.status == OK or self.status == FRESH

    @property
    def tamper(self):
        return not self.ok

    @property
    def must_rotate(self):
        return not self.ok

    def as_dict(self):
        """Fields for the tamper event record (no key material, no tags)."""
        return {"status": self.status, "reason": self.reason, "mark_seq": self.mark_seq,
                "flash_seq": self.last_seq}

    def __repr__(self):
        return "<Verdict %s: %s>" % (self.status, self.reason)


def _tag_or_none(opener, record):
    try:
        return opener.tag_of(record)
    except SealError:
        return None


def _newest(journal, opener, since):
    # newest readable record from `since` on: (seq, tag or None), (0, None) if there is none. Only the
    # last record's tag is taken: nothing is allocated here per record walked.
    seq, rec = 0, None
    for seq, rec in journal.records(since=since):
        pass
    return seq, (_tag_or_none(opener, rec) if rec is not None else None)


def _newest_record(journal, opener):
    seq, tag = _newest(journal, opener, journal.last_seq) if journal.last_seq else (0, None)
    if seq == 0:  # last_seq names no readable record: walk everything (boot after tamper only)
        seq, tag = _newest(journal, opener, 0)
    return seq, tag


def check(journal, mark, opener):
    """Compare the high-water mark (None or (seq, tag)) with the journal. Walks only the records from
    the mark to the newest, verifying their seals and chain with `opener` (reset first). The newest
    record is the newest one records() yields (journal.last_seq is only used to spot a rollback early)."""
    if mark is None:
        seq, tag = _newest_record(journal, opener)
        return Verdict(FRESH, "no high-water mark yet", 0, seq, tag)
    mseq, mtag = mark
    if journal.last_seq >= mseq:
        opener.reset()
        problem = None
        seen = False
        last_seq, last_rec = 0, None
        for seq, rec in journal.records(since=mseq):
            last_seq, last_rec = seq, rec
            if problem is not None:
                continue  # keep walking only to find the newest record
            if not seen:
                seen = True
                if seq != mseq:
                    problem = "the record at the high-water mark (seq %d) is missing" % mseq
                elif _tag_or_none(opener, rec) != bytes(mtag):
                    problem = "the record at the high-water mark (seq %d) was replaced" % mseq
                else:
                    opener.trust(seq, mtag)
                continue
            try:
                if not opener.verify(seq, rec):
                    problem = "seq %d could not be verified" % seq
            except SealError as e:
                problem = "after the high-water mark: %s" % e
        if seen:
            if problem is not None:
                return Verdict(CHAIN_BROKEN, problem, mseq, last_seq, _tag_or_none(opener, last_rec))
            return Verdict(OK, "flash reaches the high-water mark (seq %d), chain verified to seq %d"
                           % (mseq, last_seq), mseq, last_seq, opener.last_tag)
    # nothing at or after the mark: the flash is older than the mark
    seq, tag = _newest_record(journal, opener)
    if seq == 0:
        reason = "external flash holds no records, high-water mark is seq %d" % mseq
    else:
        reason = "newest record on flash is seq %d, older than the high-water mark seq %d" % (seq, mseq)
    return Verdict(ROLLED_BACK, reason, mseq, seq, tag)


def checkpoint(keystore, seq, tag, after_tamper=False):
    """Advance the high-water mark to a durable record (call after journal.append returned). The mark
    only moves forward, except right after a tamper verdict (the flash's seq numbers restarted lower)."""
    old = keystore.mark()
    if old is not None and seq < old[0] and not after_tamper:
        raise ValueError("high-water mark cannot move back (seq %d < %d)" % (seq, old[0]))
    if old is not None and seq == old[0] and bytes(tag) == bytes(old[1]):
        return  # unchanged: spare the internal flash a write
    keystore.set_mark(seq, tag)
