"""Retention by age (RETENTION.md): drop the journal's oldest sectors once every record in them is older
than the configured retention, each drop proven by the retention record the journal's on_drop seals.

    n = expire(journal, opener, now_t, keep_t)     # sectors dropped (0..MAX_DROPS)

opener: a crypto.seal.Opener of the device's keyring (what boot_verify uses: reset() and open(seq,
record)); expire opens only anchors with it, each on its own (boot_verify.open_alone). Or any callable
opener(seq, record) -> payload of a record that verifies on its own, else None (never raising).

Time is engine time in samples (the engine's sample count: it stops while the meter is unpowered, so
records are never dropped early, and may be kept longer by the time the meter was off). A record's
time is at most the time of the first checkpoint at or after its seq (RECORDS.md 6): records go to the
journal in the order they are made, checkpoints carry the engine time. So a sector is expired when the
checkpoint bounding its last seq is at least keep_t old. Only checkpoints are opened (anchors verify
on their own), so nothing here depends on the chain: a record that cannot be opened never counts as
old. Pure logic on duck types (journal: oldest_sector, records, drop_oldest); runs under CPython too.
"""
from micropython import const

MAX_DROPS = const(2)     # sectors per call: bounded work (each drop seals a record and erases a sector)
SCAN_LIMIT = const(64)   # records read past the oldest sector for its bounding checkpoint, at most
_REC_CHECKPOINT = const(2)  # records.REC_CHECKPOINT

# (id(journal), first seq of its oldest sector, that sector's time bound): the bound of a sector never
# changes, so a sector not yet due costs two header reads per call instead of a walk
_memo = [0, 0, 0]


def _open(opener, seq, record):
    if hasattr(opener, "open"):
        from umeter.crypto.boot_verify import open_alone

        return open_alone(opener, seq, record)
    return opener(seq, record)


def _checkpoint_time(opener, seq, record):
    payload = _open(opener, seq, record)
    if not payload or payload[0] != _REC_CHECKPOINT:
        return None
    from umeter import records

    try:
        return records.decode(payload)[1]["snapshot"][2]
    except (ValueError, IndexError, KeyError):
        return None


def time_bound(journal, opener, first, last):
    """Engine time (samples) that no record with seq first..last is younger than: the time of the
    checkpoint at seq `last`, or of the first checkpoint after it. None when none opens within
    SCAN_LIMIT records after `last` (not known yet: keep the sector)."""
    past = 0
    for seq, rec in journal.records(since=first):
        if seq < last:
            continue
        t = _checkpoint_time(opener, seq, rec)
        if t is not None:
            return t
        if seq > last:
            past += 1
            if past >= SCAN_LIMIT:
                return None
    return None


def expire(journal, opener, now_t, keep_t, max_drops=MAX_DROPS):
    """Drop the oldest sectors while every record in the oldest one is older than now_t - keep_t
    (engine time in samples; keep_t <= 0: keep everything). Never the head or the sector with the newest
    record (journal.drop_oldest). The journal's on_drop seals the retention record before each drop;
    a drop it does not prove is not made. Returns the number of sectors dropped (at most max_drops)."""
    if keep_t <= 0 or now_t <= keep_t:
        return 0
    cutoff = now_t - keep_t
    jid = id(journal)
    dropped = 0
    while dropped < max_drops:
        rng = journal.oldest_sector()
        if rng is None:
            break
        first, last = rng
        if _memo[0] == jid and _memo[1] == first:
            t = _memo[2]
        else:
            t = time_bound(journal, opener, first, last)
            if t is None:
                break
            _memo[0], _memo[1], _memo[2] = jid, first, t
        if t > cutoff or journal.drop_oldest() is None:
            break
        dropped += 1
    return dropped
