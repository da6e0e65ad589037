# Boot verification (SEALED.md 7): the MCU-internal high-water mark against the external flash. Pure
# logic on duck types (journal: last_seq, records(since); opener: reset/trust/open/verify/tag_of/
# last_tag; keystore: mark/set_mark), so it runs under CPython too.
#   boot_check(): what the app runs at every boot (mark record verified as an anchor, chain to the head,
#                 newest checkpoint, retention proof of the oldest record, floors)
#   check():      the revision-1 comparison (seq, tag) kept for the power-cut harness
from umeter import records
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
_RETENTION_PAYLOADS = (27, 43, 59)  # retention payload bytes with a kept tag of 0, 16 or 32 bytes


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


def _tag_or_none(opener, record):
    try:
        return opener.tag_of(record)
    except SealError:
        return None


def _is_anchor(rec):
    return len(rec) > 9 and rec[2] & 1


def _epoch_of(rec):
    return (rec[3] << 24) | (rec[4] << 16) | (rec[5] << 8) | rec[6]


def _open_alone(opener, seq, rec):
    """The payload of an anchor record verified on its own, or None."""
    if not _is_anchor(rec):
        return None
    opener.reset()
    try:
        return opener.open(seq, rec)
    except SealError:
        opener.reset()
        return None


def _decode(payload):
    try:
        return records.decode(payload)
    except (ValueError, IndexError):
        return None, None


# --- boot_check ---------------------------------------------------------------------------------------
def boot_check(journal, opener, mark=None, mark_error=None, retention_hint=0, checkpoint_hint=0):
    """Verify the flash at boot. mark: the keystore's HighWater (seq, tag, epoch) or None; mark_error:
    why the keystore could not give one (both copies damaged, unreadable): tamper, never "fresh".
    The hints (State: seq of the newest retention record and checkpoint) only say where to start
    reading; nothing in them is trusted. One walk from the lower of mark seq and retention hint to the
    head; extra walks only when something is missing (SEALED.md 7)."""
    mseq = mark.seq if mark is not None else 0
    v = Verdict(FRESH if mark is None and mark_error is None else OK, "", mseq, 0, None)
    if mark_error is not None:
        v.problem(MARK_DAMAGED, "the high-water mark cannot be read (%s): registers have no floor this "
                                "boot" % mark_error)
    starts = [s for s in (mseq, retention_hint) if s]
    start = min(starts) if starts else 0
    seen = _walk(journal, opener, v, mark, start)
    if mark is not None and not seen:
        seq, tag = _newest_record(journal, opener)
        v.last_seq, v.last_tag = seq, tag
        if seq == 0:
            reason = "external flash holds no records, high-water mark is seq %d" % mseq
        else:
            reason = "newest record on flash is seq %d, older than the high-water mark seq %d" % (seq, mseq)
        v.problem(ROLLED_BACK, reason)
    if v.checkpoint is None:
        _newest_checkpoint(journal, opener, v, checkpoint_hint if checkpoint_hint < start else 0)
        if v.checkpoint is None and checkpoint_hint:
            _newest_checkpoint(journal, opener, v, 0)
    _check_oldest(journal, opener, v, start)
    if mark is not None and v.checkpoint is not None and mark.registers:
        low = below_floor(v.checkpoint[1], mark.registers)
        if low:
            v.problem(BELOW_FLOOR, "the newest verified checkpoint (seq %d) is below the high-water mark's "
                                   "floor for %s: registers restart from the floor" % (v.checkpoint[0],
                                                                                       ", ".join(low)))
    if v.status == OK:
        v.reason = ("flash reaches the high-water mark (seq %d), chain verified to seq %d"
                    % (mseq, v.last_seq))
    elif v.status == FRESH:
        v.reason = "no high-water mark yet"
    return v


def _walk(journal, opener, v, mark, start):
    """Walk records from `start` to the head: verify the chain (resynchronising after a break at the
    next anchor), check the mark's record, keep the newest checkpoint and retention record. True when
    a record at or after the mark's seq was found."""
    mseq = mark.seq if mark is not None else 0
    seen = False
    last_rec = None
    opener.reset()
    for seq, rec in journal.records(since=start):
        v.walked += 1
        v.last_seq, last_rec = seq, rec
        if mark is not None and not seen and seq >= mseq:
            seen = True
            payload = _mark_record(opener, v, mark, seq, rec)
        else:
            try:
                payload = opener.open(seq, rec)
            except SealError as e:
                where = "after the high-water mark" if seen else "before the high-water mark"
                v.problem(CHAIN_BROKEN, "%s: %s" % (where, e))
                payload = _restart(opener, seq, rec)
        if payload is None:
            continue
        v.verified += 1
        typ, fields = _decode(payload)
        if typ == records.REC_CHECKPOINT:
            v.checkpoint = (seq, fields["snapshot"])
        elif typ == records.REC_RETENTION:
            v.retention = (seq, fields)
    v.last_tag = _tag_or_none(opener, last_rec) if last_rec is not None else None
    return seen


def _restart(opener, seq, rec):
    """Start the chain again at rec (after a break): an anchor verifies on its own, any other record's
    tag becomes the link for the next one. Its payload, or None."""
    opener.reset()
    try:
        return opener.open(seq, rec)
    except SealError:
        opener.reset()
        return None


def _mark_record(opener, v, mark, seq, rec):
    """The record at the mark must be there, carry the marked tag and key epoch and verify on its own
    as a checkpoint (checkpoints are sealed as anchors). Otherwise a problem is recorded and the chain
    starts again at the record found. Returns the record's payload, or None."""
    mseq = mark.seq
    why = None
    if seq != mseq:
        why = "the record at the high-water mark (seq %d) is missing" % mseq
    elif _tag_or_none(opener, rec) != bytes(mark.tag):
        why = "the record at the high-water mark (seq %d) was replaced" % mseq
    elif mark.epoch and _epoch_of(rec) != mark.epoch:
        why = "the record at the high-water mark (seq %d) is of another key epoch" % mseq
    elif not _is_anchor(rec):
        why = "the record at the high-water mark (seq %d) is not an anchor" % mseq
    payload = _restart(opener, seq, rec)
    if why is None:
        if payload is None:
            why = "the record at the high-water mark (seq %d) does not verify" % mseq
        elif _decode(payload)[0] != records.REC_CHECKPOINT:
            why = "the record at the high-water mark (seq %d) is not a checkpoint" % mseq
    if why is not None:
        v.problem(CHAIN_BROKEN, why)
    return payload


def _newest(journal, opener, since):
    seq, rec = 0, None
    for seq, rec in journal.records(since=since):
        pass
    return seq, (_tag_or_none(opener, rec) if rec is not None else None)


def _newest_record(journal, opener):
    seq, tag = _newest(journal, opener, journal.last_seq) if journal.last_seq else (0, None)
    if seq == 0:  # last_seq names no readable record: walk everything (boot after tamper only)
        seq, tag = _newest(journal, opener, 0)
    return seq, tag


def _newest_checkpoint(journal, opener, v, since):
    """The newest checkpoint from `since` on that verifies on its own (checkpoints are anchors)."""
    for seq, rec in journal.records(since=since):
        if not _is_anchor(rec):
            continue
        payload = _open_alone(opener, seq, rec)
        if payload is not None:
            typ, fields = _decode(payload)
            if typ == records.REC_CHECKPOINT:
                v.checkpoint = (seq, fields["snapshot"])


def _retention_candidate(rec):
    # an anchor whose payload length is that of a retention record: only those are opened (cheap scan)
    if not _is_anchor(rec) or rec[1] not in (1, 2):
        return False
    n = len(rec) - 10 - rec[9] - (16 if rec[1] == 1 else 32)
    return n in _RETENTION_PAYLOADS


def _newest_retention(journal, opener, v):
    for seq, rec in journal.records(since=0):
        if _retention_candidate(rec):
            payload = _open_alone(opener, seq, rec)
            if payload is not None:
                typ, fields = _decode(payload)
                if typ == records.REC_RETENTION:
                    v.retention = (seq, fields)


def _check_oldest(journal, opener, v, start):
    """Ring retention is provable, deletion is tamper (RECORDS.md 5): the oldest record must start the
    chain (a genesis anchor), or be the oldest kept record of the newest retention record (seq and tag),
    or lie in the range a retention record announced (its drop cut short by a power cut)."""
    oldest = None
    for oldest in journal.records(since=0):
        break
    if oldest is None:
        return
    oseq, orec = oldest
    v.oldest_seq = oseq
    if _is_anchor(orec) and orec[9] == 0 and _open_alone(opener, oseq, orec) is not None:
        return  # genesis: nothing before it ever existed
    if v.retention is None and start > oseq:
        _newest_retention(journal, opener, v)  # the State's hint was lost or stale: look everywhere
    if v.retention is not None:
        rseq, r = v.retention
        if oseq == r["oldest_kept"] and _tag_or_none(opener, orec) == bytes(r["oldest_kept_tag"]):
            return
        if r["first_dropped"] <= oseq <= r["last_dropped"]:
            return  # the announced drop had not finished: more is kept than the record says
        v.problem(DELETED, "oldest records missing: the oldest record is seq %d, the newest retention "
                           "record (seq %d) keeps seq %d" % (oseq, rseq, r["oldest_kept"]))
        return
    v.problem(DELETED, "oldest records missing: the oldest record (seq %d) does not start the chain and "
                       "no retention record covers it" % oseq)


def below_floor(snapshot, floors):
    """OBIS codes whose register in the snapshot is below the mark's floor (whole mWh)."""
    from umeter.metering import obis

    frac = snapshot[1]
    low = []
    for k, code in enumerate(obis.REGISTERS):
        if (snapshot[3 + k] >> frac) < floors.get(code, 0):
            low.append(code)
    return low


def with_floors(snapshot, floors, frac_bits):
    """Engine snapshot whose every register is at least the mark's floor: [1, frac, t, fu x 4]. snapshot
    None (no checkpoint verified) starts at time 0 from the floors alone."""
    from umeter.metering import obis

    snap = list(snapshot) if snapshot is not None else [records.SNAPSHOT_VERSION, frac_bits, 0, 0, 0, 0, 0]
    for k, code in enumerate(obis.REGISTERS):
        floor = floors.get(code, 0) << snap[1]
        if snap[3 + k] < floor:
            snap[3 + k] = floor
    return snap


# --- revision 1 (kept for tests/mpt_seal_powercut.py) ----------------------------------------------------
def check(journal, mark, opener):
    """Compare a (seq, tag) mark with the journal: the record at the mark must carry the marked tag (it
    is verified in full when it is an anchor) and the chain from it must verify to the newest record."""
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
                elif _is_anchor(rec) and _open_alone(opener, seq, rec) is None:
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
                return Verdict(CHAIN_BROKEN, problem, mseq, last_seq, _tag_or_none(opener, last_rec))
            return Verdict(OK, "flash reaches the high-water mark (seq %d), chain verified to seq %d"
                           % (mseq, last_seq), mseq, last_seq, opener.last_tag)
    seq, tag = _newest_record(journal, opener)
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
