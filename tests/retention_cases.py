# Journal retention by age (JOURNAL.md 6.1): drop_oldest / oldest_sector, shared by tests/test_journal.py
# (CPython) and tests/mpt_retention.py (both MicroPython lanes). Small sectors keep every run short.
from mptest import raises
from sim.nor import NorFlash, PowerCut
from umeter.store import Journal, StoreError

SS = 1024
SECTORS = 6
PER = (SS - 48) // 64           # records of 40 bytes (extent 64) per sector: 15


def payload(i):
    return bytes([i & 0xFF, (i >> 8) & 0xFF]) * 20


def _journal(f, log):
    """A journal whose on_drop appends a marker record naming the drop (as the app seals one)."""
    j = None

    def on_drop(first, last):
        log.append((first, last, list(j.records(since=first))[0][0]))   # still readable: before any erase
        j.append(b"R%d-%d" % (first, last))

    j = Journal(f, on_drop=on_drop)
    return j


def _filled(n_records, seed=1):
    f = NorFlash(SECTORS * SS, sector_size=SS, page_size=256, seed=seed)
    log = []
    j = _journal(f, log)
    for i in range(n_records):
        j.append(payload(i))
    return f, j, log


def check_drop_oldest_api():
    f, j, log = _filled(3 * PER + 4)           # 4 sectors in use, the ring far from full
    recs = list(j.records())
    first, last = j.oldest_sector()
    assert first == recs[0][0] == 1 and last >= first
    oldest = [s for s, _ in recs if first <= s <= last]
    assert oldest and oldest[-1] == last        # consecutive seqs: the range is exactly the sector's
    assert j.drop_oldest() == (first, last)
    assert log == [(first, last, first)]        # on_drop ran while the sector was still readable
    after = list(j.records())
    assert after[0][0] == last + 1 and [r for r in recs if r[0] > last] == after[:-1]
    assert after[-1][1] == b"R%d-%d" % (first, last)
    j2 = _journal(f, log)                       # the drop is durable and the journal mounts as before
    assert list(j2.records()) == after and j2.stats()["oldest_seq"] == last + 1
    # drop while allowed: never the head, never the sector holding the newest record
    while j2.drop_oldest() is not None:
        pass
    assert j2.oldest_sector() is None
    left = list(j2.records())
    assert left and left[-1][0] == j2.last_seq
    # the ring goes on through the blank sectors and wraps, ring retention still seals first
    n0 = j2.last_seq
    for i in range(SECTORS * PER * 2):
        j2.append(payload(i))
    j3 = _journal(f, [])
    seqs = [s for s, _ in j3.records()]
    assert seqs == sorted(set(seqs)) and seqs[-1] == j3.last_seq and seqs[0] > n0
    assert len(seqs) >= j3.capacity(40)


def check_drop_oldest_refusals():
    f = NorFlash(SECTORS * SS, sector_size=SS, page_size=256)
    j = Journal(f)
    assert j.oldest_sector() is None and j.drop_oldest() is None      # empty
    for i in range(PER - 2):
        j.append(payload(i))
    assert j.oldest_sector() is None and j.drop_oldest() is None      # only the head
    # without on_drop the drop is made (nothing to prove it with; the caller chose so)
    for i in range(PER):
        j.append(payload(i))
    assert j.drop_oldest() == (1, PER) and list(j.records())[0][0] == PER + 1
    # an on_drop that seals nothing: no drop
    f, j, log = _filled(2 * PER + 3)
    j.on_drop = lambda first, last: None
    keep = list(j.records())
    assert j.drop_oldest() is None and list(j.records()) == keep
    # an on_drop that raises: nothing erased, the exception reaches the caller
    def boom(first, last):
        raise StoreError("no key")
    j.on_drop = boom
    with raises(StoreError, "no key"):
        j.drop_oldest()
    assert list(j.records()) == keep


def _cut_drop(f, j, cut, where):
    """drop_oldest with a cut at its cut-th program/erase; the remounted journal, checked."""
    before = list(j.records())
    first, last = j.oldest_sector()
    f.arm_cut(cut)
    try:
        j.drop_oldest()
        f.disarm_cut()
    except PowerCut:
        f.power_on()
    j2 = _journal(f, [])
    got = dict(j2.records())
    for seq, p in before:
        if seq > last:
            assert got.get(seq) == p, (where, seq)
    dropped = [s for s, _ in before if s <= last]
    present = [s for s in dropped if s in got]
    assert present == [] or present == dropped, (where, present)
    assert j2.next_seq > before[-1][0]
    return j2


def check_drop_oldest_power_cuts(full, seeds=(3,), cuts=range(1, 9)):
    """A cut at each program/erase of drop_oldest, twice in a row (the second drop first clears what
    the first cut left): the journal mounts, every record outside the dropped range is there unchanged,
    the dropped sector is whole or gone, and the journal goes on through a wrap."""
    n = (SECTORS + 1) * PER if full else 3 * PER + 5
    for seed in seeds:
        for cut in cuts:
            f, j, log = _filled(n, seed=seed + cut)
            j = _cut_drop(f, j, cut, (full, seed, cut, 1))
            j = _cut_drop(f, j, cut, (full, seed, cut, 2))
            top = j.last_seq
            for i in range(SECTORS * PER + 3):
                j.append(payload(i))
            j3 = _journal(f, [])
            seqs = [s for s, _ in j3.records()]
            assert seqs == sorted(set(seqs)) and seqs[0] > top - PER and j3.last_seq == seqs[-1]
            assert len(seqs) >= j3.capacity(40)


def check_torn_drop_is_only_accepted_next_to_the_oldest():
    """A dirty sector between the head and the oldest live sector (a cut while drop_oldest erased it) is
    in doubt, not foreign; dirty data anywhere else still refuses the device untouched."""
    f, j, log = _filled(PER + 4)
    assert j.head + 2 < SECTORS - 1 and j.kinds[SECTORS - 1] == 0
    # a blank sector past the head's successor (that one is in doubt after a cut while opening) and not
    # next to the oldest
    f.program((j.head + 2) * SS, b"\x12\x34" * 8)
    img = f.read(0, f.size)
    with raises(StoreError, "not a journal"):
        Journal(f)
    assert f.read(0, f.size) == img
    # the same bytes in the sector just before the oldest live one: a torn drop, in doubt, never read
    f, j, log = _filled(2 * PER + 4)
    keep = list(j.records())
    f.program((SECTORS - 1) * SS, b"\x12\x34" * 8)
    j2 = _journal(f, [])
    assert list(j2.records()) == keep
    assert j2.drop_oldest() is not None          # clears it (erased before the next drop)
    assert f.read((SECTORS - 1) * SS, 16) == b"\xff" * 16


def check_torture_with_drops(rounds, seed, sectors=8):
    """The journal's power-cut torture (host_tools/harness/journal_torture.py: every acknowledged record
    present except those older than the oldest present, seqs never reissued) with drop_oldest calls
    mixed into the appends (before about one make_room in six), cuts landing in them too."""
    from harness.journal_torture import JournalTorture

    class DropTorture(JournalTorture):
        dropped = 0

        def _mount(self):
            j = JournalTorture._mount(self)
            plain = j.make_room

            def make_room(n):
                if self.rng.below(6) == 0 and j.drop_oldest() is not None:
                    self.dropped += 1
                return plain(n)

            j.make_room = make_room
            return j

    t = DropTorture(seed=seed, sectors=sectors, max_ops=8 * sectors + 8, retention=True)
    for _ in range(rounds):
        t.round()
    s = t.summary()
    assert s["cuts"] == rounds and s["lost"] == 0 and s["corrupt"] == 0
    assert t.dropped >= rounds // 10 and s["erase_cuts"] > 0, (t.dropped, s)
    return s, t.dropped
