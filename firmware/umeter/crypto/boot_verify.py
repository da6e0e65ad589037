# Boot verification (SEALED.md 7): the MCU-internal high-water mark (with its register floors) against
# the external flash: the mark's record verified as an anchor checkpoint, the chain to the head, the
# newest checkpoint, the retention proof of the oldest record. Pure logic on duck types (journal:
# last_seq, records(since); opener: reset/open/tag_of), so it runs under CPython too. Verdicts and the
# revision-1 check() live in rollback.py.
from umeter.crypto import SealError
from umeter.crypto.rollback import (BELOW_FLOOR, CHAIN_BROKEN, DELETED, FRESH, MARK_DAMAGED, OK,
                                    ROLLED_BACK, Verdict, is_anchor, newest_record, tag_or_none)

_REC_CHECKPOINT = 2  # records.REC_CHECKPOINT, REC_RETENTION (RECORDS.md 1)
_REC_RETENTION = 4
_RETENTION_BODY = 27  # type byte + RETENTION_FORMAT (RECORDS.md 5), before the kept tag


def _epoch_of(rec):
    return (rec[3] << 24) | (rec[4] << 16) | (rec[5] << 8) | rec[6]


def open_alone(opener, seq, rec):
    """The payload of an anchor record verified on its own, or None."""
    if not is_anchor(rec):
        return None
    opener.reset()
    try:
        return opener.open(seq, rec)
    except SealError:
        opener.reset()
        return None


def _decode(payload):
    from umeter import records  # lazily: the revision-1 check() runs in small heaps without it

    try:
        return records.decode(payload)
    except (ValueError, IndexError):
        return None, None


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
        seq, tag = newest_record(journal, opener)
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
        if typ == _REC_CHECKPOINT:
            v.checkpoint = (seq, fields["snapshot"])
        elif typ == _REC_RETENTION:
            v.retention = (seq, fields)
    v.last_tag = tag_or_none(opener, last_rec) if last_rec is not None else None
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
    elif tag_or_none(opener, rec) != bytes(mark.tag):
        why = "the record at the high-water mark (seq %d) was replaced" % mseq
    elif mark.epoch and _epoch_of(rec) != mark.epoch:
        why = "the record at the high-water mark (seq %d) is of another key epoch" % mseq
    elif not is_anchor(rec):
        why = "the record at the high-water mark (seq %d) is not an anchor" % mseq
    payload = _restart(opener, seq, rec)
    if why is None:
        if payload is None:
            why = "the record at the high-water mark (seq %d) does not verify" % mseq
        elif _decode(payload)[0] != _REC_CHECKPOINT:
            why = "the record at the high-water mark (seq %d) is not a checkpoint" % mseq
    if why is not None:
        v.problem(CHAIN_BROKEN, why)
    return payload


def _newest_checkpoint(journal, opener, v, since):
    """The newest checkpoint from `since` on that verifies on its own (checkpoints are anchors)."""
    for seq, rec in journal.records(since=since):
        if not is_anchor(rec):
            continue
        payload = open_alone(opener, seq, rec)
        if payload is not None:
            typ, fields = _decode(payload)
            if typ == _REC_CHECKPOINT:
                v.checkpoint = (seq, fields["snapshot"])


def _retention_candidate(rec):
    # an anchor whose payload length is that of a retention record (kept tag: none, or as long as this
    # record's own tag): only those are opened, so the scan costs no MAC per checkpoint
    if not is_anchor(rec) or rec[1] not in (1, 2):
        return False
    t = 16 if rec[1] == 1 else 32
    n = len(rec) - 10 - rec[9] - t
    return n == _RETENTION_BODY or n == _RETENTION_BODY + t


def _newest_retention(journal, opener, v):
    for seq, rec in journal.records(since=0):
        if _retention_candidate(rec):
            payload = open_alone(opener, seq, rec)
            if payload is not None:
                typ, fields = _decode(payload)
                if typ == _REC_RETENTION:
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
    if is_anchor(orec) and orec[9] == 0 and open_alone(opener, oseq, orec) is not None:
        return  # genesis: nothing before it ever existed
    if v.retention is None and start > oseq:
        _newest_retention(journal, opener, v)  # the State's hint was lost or stale: look everywhere
    if v.retention is not None:
        rseq, r = v.retention
        if oseq == r["oldest_kept"] and tag_or_none(opener, orec) == bytes(r["oldest_kept_tag"]):
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

    snap = list(snapshot) if snapshot is not None else [1, frac_bits, 0, 0, 0, 0, 0]
    for k, code in enumerate(obis.REGISTERS):
        floor = floors.get(code, 0) << snap[1]
        if snap[3 + k] < floor:
            snap[3 + k] = floor
    return snap


