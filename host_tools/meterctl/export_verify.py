"""`meterctl export`'s verdict: open every record (meterctl.sealing), then check both ends of the journal.

Trust in a journal image comes from three places (SEALED.md 5-7, RECORDS.md 5):
- the chain: every record's tag covers its predecessor's tag, so inside the journal nothing can be
  altered, removed, reordered or spliced without a break. Seqs are positional (JOURNAL.md revision 3):
  they strictly increase but are not contiguous, so a seq gap across which the chain verifies is no gap.
- the oldest end: the oldest record must start the chain (a genesis anchor, tag of length 0), or be the
  record a sealed retention record (type 4) names as the oldest kept after a ring-retention drop, with
  that exact tag. Anything else is deletion at the oldest end.
- the newest end: the high-water mark (the device's keystore: --key-dir, --port, or a --mark file)
  names the newest durable checkpoint (seq, key epoch, tag, register floors). It must be on the
  journal, verify and carry registers not below the floors; otherwise newest records were removed.
Key mismatches (WrongKeyError) are a wrong key only where a wrong key can explain them: nothing opens,
or whole key epochs at one end, cleanly chained to the rest (a re-key), never with a keystore directory
(it holds every key the meter used) and never at or below the mark."""
from meterctl import sealing

OBIS_ENERGY = ("1.8.0", "2.8.0", "3.8.0", "4.8.0")


def _fw():
    from meterctl import mpcompat

    mpcompat.install()
    from umeter import records
    from umeter.metering import engine
    return records, engine


class Result:
    def __init__(self):
        self.rows = []            # decoded, verified records
        self.tamper = []          # (seq, message)
        self.wrong_key = []       # (seq, epoch, message)
        self.withheld = []        # seqs that could not be verified (chain head after ring retention)
        self.breaks = 0           # chain breaks (each also a tamper entry)
        self.notes = []           # checks that passed, informational
        self.device_tamper = []   # (seq, text): tamper events the meter itself sealed into the journal
        self.tamper_log = []      # (source, count): an active tamper log in the device's keystore
        self.retention = []       # (seq, fields) of verified retention records
        self.marks = 0            # high-water marks checked
        self.skipped = 0          # slots the journal skipped (CRC): torn writes, or damage
        self.verified = 0
        self.first_seq = 0
        self.last_seq = 0


def _parse(record):
    try:
        return sealing.parse(record)
    except sealing.SealError:
        return None


def _epoch_of(record):
    p = _parse(record)
    return None if p is None else p[2]


def _tag(record):
    try:
        return sealing.tag_of(record)
    except sealing.SealError:
        return None


def verify(snapshot, keys, min_seq=None, marks=()):
    """Open and check every record of snapshot; decode the verified ones into rows. marks: the Mark
    objects (meterctl.markfile) to check the newest end against, besides keys.mark."""
    res = Result()
    res.skipped = snapshot.corrupt
    recs = snapshot.records
    op = sealing.Opener(keys.keyring)
    opened = []
    ok_epochs = set()
    for seq, rec in recs:
        epoch = _epoch_of(rec)
        try:
            payload = op.open(seq, rec)
        except (sealing.WrongKeyError, sealing.KeyMissing) as e:
            res.wrong_key.append((seq, epoch, str(e)))
            op.reset()
            continue
        except sealing.SealError as e:
            res.tamper.append((seq, str(e)))
            res.breaks += 1
            op.reset()
            try:
                payload = op.open(seq, rec)  # an anchor verifies on its own: keep what can be trusted
            except sealing.SealError:
                op.reset()
                continue
        if payload is None:
            res.withheld.append(seq)
            continue
        ok_epochs.add(epoch)
        opened.append((seq, epoch, payload))
    res.verified = len(opened)
    all_marks = [m for m in [keys.mark] + list(marks) if m is not None]
    _classify_key_mismatches(recs, ok_epochs, res, keys.complete, all_marks)
    for seq, epoch, payload in opened:
        res.rows.append(decode_row(seq, epoch, payload, res))
    if recs:
        res.first_seq, res.last_seq = recs[0][0], recs[-1][0]
    good_marks = [m for m in all_marks if not m.problem]
    if not res.verified and res.wrong_key and good_marks:
        # The mark says this meter sealed a checkpoint at its seq; none of these records opens with the
        # meter's keys: the flash is not this meter's (replaced), or the keys are another meter's.
        m = good_marks[0]
        res.tamper.append((m.seq, "none of the %d record(s) opens with the keys while %s names seq %d: "
                                  "another meter's flash (replaced), or the keys of another meter"
                           % (len(res.wrong_key), "the high-water mark of %s" % m.source, m.seq)))
        res.wrong_key = []
    if res.verified or not res.wrong_key:  # a key that opens nothing says nothing about either end
        _check_oldest_end(snapshot, {seq for seq, _, _ in opened}, res)
        _check_marks(snapshot, all_marks, min_seq, {seq for seq, _, _ in opened}, res)
    return res


def _classify_key_mismatches(recs, ok_epochs, res, keys_complete, marks):
    """Tell a wrong key from altered headers. A meter's key epochs never decrease along the journal, and
    a key the exporter lacks (a re-key) covers whole epochs at one end of it, its first record an anchor
    chained to the record before it. Any other key check mismatch is an altered or foreign record."""
    prev = None
    for seq, rec in recs:
        epoch = _epoch_of(rec)
        if epoch is None:
            continue
        if prev is not None and epoch < prev[1]:
            res.tamper.append((seq, "key epoch goes backwards: seq %d has epoch %d, seq %d epoch %d (altered "
                                    "header, or records from another history)"
                               % (prev[0], prev[1], seq, epoch)))
        prev = (seq, epoch)
    if not res.wrong_key or not ok_epochs:
        return  # nothing opens: a wrong key (or every record replaced: the mark cannot tell, no key)
    why = _why_not_a_rekey(recs, ok_epochs, res.wrong_key, keys_complete, marks)
    if why:
        for seq, epoch, msg in res.wrong_key:
            res.tamper.append((seq, "seq %d does not open with the key while other records do (%s): %s"
                               % (seq, why, msg)))
        res.wrong_key = []


def _why_not_a_rekey(recs, ok_epochs, wrong, keys_complete, marks):
    if keys_complete:
        return "the keystore holds every key this meter used: altered or foreign record"
    if any(e in ok_epochs for _, e, _ in wrong):
        return "inside a key epoch the key opens: spliced or altered"
    pos = {seq: i for i, (seq, _) in enumerate(recs)}
    idx = sorted(pos[w[0]] for w in wrong)
    if idx != list(range(idx[0], idx[-1] + 1)):
        return "not one block of records: altered or foreign records"
    mark_seq = max((m.seq for m in marks if not m.problem), default=0)
    if idx[-1] == len(recs) - 1:  # the newest records: a re-key after the exporter's key
        if recs[idx[0]][0] <= mark_seq:
            return "at or below the high-water mark, which this key must open"
        first = _parse(recs[idx[0]][1])
        before = _tag(recs[idx[0] - 1][1])
        if first is None or first[4] is None or before is None or bytes(first[4]) != before:
            return "its first record does not start a key epoch chained to the record before it"
        if min(e for _, e, _ in wrong) <= max(ok_epochs):
            return "its key epoch is not above the epochs the key opens"
        return ""
    if idx[0] == 0:  # the oldest records: keys before a re-key the exporter's key does not cover
        nxt = _parse(recs[idx[-1] + 1][1])
        last = _tag(recs[idx[-1]][1])
        if nxt is None or nxt[4] is None or last is None or bytes(nxt[4]) != last:
            return "the record after them does not start a key epoch chained to them"
        if max(e for _, e, _ in wrong) >= min(ok_epochs):
            return "their key epoch is not below the epochs the key opens"
        return ""
    return "in the middle of the journal: altered or foreign records"


def _check_oldest_end(snapshot, verified, res):
    """RECORDS.md 5: the oldest record starts the chain, or a retention record names it (seq and tag)."""
    if not snapshot.records:
        return
    first_seq, first_rec = snapshot.records[0]
    p = _parse(first_rec)
    skipped = snapshot.oldest_seq and snapshot.oldest_seq < first_seq
    if p is not None and p[4] is not None and len(p[4]) == 0 and first_seq in verified:
        res.notes.append("the oldest record (seq %d) starts the chain" % first_seq)
        return
    tag = _tag(first_rec)
    for seq, f in reversed(res.retention):
        if f["oldest_kept"] == first_seq and bytes(f["oldest_kept_tag"]) == tag:
            res.notes.append("the oldest record (seq %d) is the oldest kept by the retention record at seq %d"
                             % (first_seq, seq))
            return
    damaged = (" (the journal skipped a damaged record at seq %d before it)" % snapshot.oldest_seq
               if skipped else "")
    if res.retention:
        seq, f = res.retention[-1]
        msg = ("records at the oldest end were deleted or damaged: the newest retention record (seq %d) "
               "keeps seq %d and later, the oldest record on the journal is seq %d%s"
               % (seq, f["oldest_kept"], first_seq, damaged))
    else:
        msg = ("records at the oldest end were deleted or damaged: the oldest record (seq %d) does not start "
               "the chain and no retention record covers a drop%s" % (first_seq, damaged))
    res.tamper.append((first_seq, msg))


def _registers_of(row):
    return {code: int(round(row[code] * 1000)) for code in OBIS_ENERGY if code in row}


def _check_marks(snapshot, marks, min_seq, verified, res):
    newest = snapshot.records[-1][0] if snapshot.records else 0
    by_seq = dict(snapshot.records)
    checkpoints = [r for r in res.rows if r["type"] == "checkpoint"]
    for m in marks:
        res.marks += 1
        what = "the high-water mark of %s" % m.source
        if m.tamper and m.tamper.get("active"):
            res.tamper_log.append((m.source, m.tamper.get("count", 0)))
        if m.problem:
            res.tamper.append((0, m.problem))
            continue
        if newest < m.seq:
            res.tamper.append((m.seq, "rollback or deletion at the newest end: the newest record is seq %d, "
                                      "older than %s (seq %d)" % (newest, what, m.seq)))
            continue
        rec = by_seq.get(m.seq)
        if rec is None:
            res.tamper.append((m.seq, "newest records deleted or damaged: the checkpoint at %s (seq %d) is "
                                      "missing" % (what, m.seq)))
            continue
        if _tag(rec) != m.tag:
            res.tamper.append((m.seq, "the record at %s (seq %d) was replaced" % (what, m.seq)))
            continue
        if m.seq not in verified:
            res.tamper.append((m.seq, "the record at %s (seq %d) does not verify" % (what, m.seq)))
            continue
        if m.epoch and _epoch_of(rec) != m.epoch:
            res.tamper.append((m.seq, "the record at %s (seq %d) has key epoch %s, the mark says %d"
                               % (what, m.seq, _epoch_of(rec), m.epoch)))
            continue
        low = _below_floors(checkpoints, m)
        if low:
            res.tamper.append((m.seq, "registers below %s: %s" % (what, low)))
            continue
        res.notes.append("%s (seq %d) is on the journal and verifies" % (what, m.seq))
    if min_seq:
        res.marks += 1
        if newest < min_seq:
            res.tamper.append((min_seq, "rollback: the newest record is seq %d, older than the expected "
                                        "high-water mark (--min-seq) seq %d" % (newest, min_seq)))
        else:
            res.notes.append("the expected high-water mark (--min-seq %d) is reached" % min_seq)


def _below_floors(checkpoints, mark):
    """'' or which register of the newest verified checkpoint at or after the mark is below its floor."""
    if not mark.registers:
        return ""
    later = [r for r in checkpoints if r["seq"] >= mark.seq]
    if not later:
        return "no verified checkpoint at or after seq %d" % mark.seq
    regs = _registers_of(later[-1])
    low = ["%s %d mWh < floor %d mWh" % (c, regs[c], f) for c, f in sorted(mark.registers.items())
           if c in regs and regs[c] < f]
    return ("the newest checkpoint (seq %d) has " % later[-1]["seq"] + ", ".join(low)) if low else ""


def _wh(milli):
    return round(milli / 1000.0, 3)


def decode_row(seq, epoch, payload, res=None):
    """One verified record -> a row dict (export.COLUMNS keys that apply)."""
    records, engine = _fw()
    row = {"seq": seq, "key_epoch": epoch}
    try:
        typ, fields = records.decode(payload)
        if typ == records.REC_PROFILE:
            p = engine.decode_profile(fields)
            row.update(type="profile", t_end_s=p["t_end_s"], minutes=p["minutes"], flags=p["flags"],
                       sat_samples=p.get("sat_samples"))
            for code in OBIS_ENERGY:
                row[code] = _wh(p[code])
            for code in ("32.3.0", "32.5.0", "32.6.0", "1.6.0"):
                row[code] = p[code]
        elif typ == records.REC_CHECKPOINT:
            snap = fields["snapshot"]
            frac = snap[1]
            row.update(type="checkpoint", t_samples=snap[2])
            for code, fu in zip(OBIS_ENERGY, snap[3:7]):
                row[code] = _wh(fu >> frac)
        elif typ == records.REC_RETENTION:
            row.update(type="retention", first_dropped=fields["first_dropped"],
                       last_dropped=fields["last_dropped"], oldest_kept=fields["oldest_kept"])
            if res is not None:
                res.retention.append((seq, fields))
        else:
            row.update(type="event", event=fields["event"], code=fields["code"], arg=fields["arg"],
                       text=fields["text"])
            if res is not None and fields["code"] == records.EV_TAMPER:
                res.device_tamper.append((seq, fields["text"]))
    except (ValueError, UnicodeError) as e:
        # Verified but not understood: written by newer firmware. Shown, never guessed at.
        row.update(type="unknown", text="undecodable payload (%s), %d bytes" % (e, len(payload)))
    return row
