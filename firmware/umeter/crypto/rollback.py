# Rollback verdicts (SEALED.md 7) and the revision-1 check of a (seq, tag) high-water mark against the
# external flash, kept for the power-cut harness; the app's boot check is boot_verify.py. Pure logic on
# duck types (journal: last_seq, records(since); opener: reset/trust/open/verify/tag_of/last_tag;
# keystore: mark/set_mark), so it runs under CPython too.
from umeter.crypto import SealError

OK = "ok"                      # the flash reaches the mark and the chain from it verifies
FRESH = "fresh"                # no mark yet (first boot after provisioning)
ROLLED_BACK = "rolled_back"    # the newest record on flash is older than the mark (or the flash is empty)
CHAIN_BROKEN = "chain_broken"  # the mark's record is missing or differs, or the chain after it fails
MARK_DAMAGED = "mark_damaged"  # the keystore holds a mark but no intact copy of it
DELETED = "deleted"            # the oldest records are missing and no retention record covers them
BELOW_FLOOR = "below_floor"    # the newest verified checkpoint holds a register below the mark's floor
TAMPER_LOG_DAMAGED = "tamper_log_damaged"  # the MCU's tamper log itself was unreadable (app)
# code per verdict in the keystore's tamper log (KEYSTORE.md: code u8)
CODES = {ROLLED_BACK: 1, CHAIN_BROKEN: 2, MARK_DAMAGED: 3, DELETED: 4, BELOW_FLOOR: 5, TAMPER_LOG_DAMAGED: 6}
CODE_NAMES = dict((c, s) for s, c in CODES.items())


class Verdict:
    """Outcome of check() / boot_check(). last_seq/last_tag: the newest record on flash (tag None if
    there is none or it is unreadable), for Sealer.resume(). must_rotate: the app must start a new key
    epoch before sealing again. boot_check() adds: problems [(status, reason)] (the first one is the
    verdict), checkpoint (seq, snapshot) of the newest verified checkpoint or None, retention
    (seq, fields) of the newest verified retention record or None, oldest_seq, verified, walked."""

    def __init__(self, status, reason, mark_seq, last_seq, last_tag):
        self.status = status
        self.reason = reason
        self.mark_seq = mark_seq
        self.last_seq = last_seq
        self.last_tag = last_tag
        self.problems = []
        self.checkpoint = None
        self.retention = None
        self.oldest_seq = 0
        self.verified = 0
        self.walked = 0

    @property
    def ok(self):
        return self.status == OK or self.status == FRESH

    @property
    def tamper(self):
        return not self.ok

    @property
    def must_rotate(self):
        return not self.ok

    @property
    def code(self):
        return CODES.get(self.status, 0)

    def problem(self, status, reason):
        if not self.problems:
            self.status, self.reason = status, reason
        self.problems.append((status, reason))

    def as_dict(self):
        """Fields for status and the tamper event record (no key material, no tags)."""
        d = {"status": self.status, "reason": self.reason, "mark_seq": self.mark_seq,
             "flash_seq": self.last_seq}
        if len(self.problems) > 1:
            d["also"] = [r for _, r in self.problems[1:]]
        return d

    def __repr__(self):
        return "<Verdict %s: %s>" % (self.status, self.reason)


def tag_or_none(opener, record):
    try:
        return opener.tag_of(record)
    except SealError:
        return None


def is_anchor(rec):
    return len(rec) > 9 and rec[2] & 1


def _verifies_alone(opener, seq, rec):
    opener.reset()
    try:
        return opener.verify(seq, rec)
    except SealError:
        return False


def _newest(journal, opener, since):
    seq, rec = 0, None
    for seq, rec in journal.records(since=since):
        pass
    return seq, (tag_or_none(opener, rec) if rec is not None else None)


def newest_record(journal, opener):
    seq, tag = _newest(journal, opener, journal.last_seq) if journal.last_seq else (0, None)
    if seq == 0:  # last_seq names no readable record: walk everything (boot after tamper only)
        seq, tag = _newest(journal, opener, 0)
    return seq, tag


# --- revision 1 (kept for tests/mpt_seal_powercut.py) ----------------------------------------------------
def check(journal, mark, opener):
    """Compare a (seq, tag) mark with the journal: the record at the mark must carry the marked tag (it
    is verified in full when it is an anchor) and the chain from it must verify to the newest record."""
    if mark is None:
        seq, tag = newest_record(journal, opener)
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
                elif tag_or_none(opener, rec) != bytes(mtag):
                    problem = "the record at the high-water mark (seq %d) was replaced" % mseq
                elif is_anchor(rec) and not _verifies_alone(opener, seq, rec):
                    problem = "the record at the high-water mark (seq %d) does not verify" % mseq
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
                return Verdict(CHAIN_BROKEN, problem, mseq, last_seq, tag_or_none(opener, last_rec))
            return Verdict(OK, "flash reaches the high-water mark (seq %d), chain verified to seq %d"
                           % (mseq, last_seq), mseq, last_seq, opener.last_tag)
    seq, tag = newest_record(journal, opener)
    if seq == 0:
        reason = "external flash holds no records, high-water mark is seq %d" % mseq
    else:
        reason = "newest record on flash is seq %d, older than the high-water mark seq %d" % (seq, mseq)
    return Verdict(ROLLED_BACK, reason, mseq, seq, tag)


def checkpoint(keystore, seq, tag):
    """Revision-1 mark (seq, tag): moves forward only (ValueError otherwise; there is no exception after
    a tamper verdict any more). The app uses keystore.advance_mark() with epoch and registers."""
    old = keystore.mark()
    if old is not None and seq < old[0]:
        raise ValueError("high-water mark cannot move back (seq %d < %d)" % (seq, old[0]))
    if old is not None and seq == old[0] and bytes(tag) == bytes(old[1]):
        return  # unchanged: spare the internal flash a write
    keystore.set_mark(seq, tag)
