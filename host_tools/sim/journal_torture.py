"""Power-cut torture for the Journal on the NOR simulator (CPython and MicroPython alike).

One round: arm a cut at a random program/erase a few operations ahead, append random records until
the cut tears one, power on, remount, and check the oracle:
  - every append that returned is present, intact and in order, except records older than the
    oldest one present (those may only have been dropped by ring retention, never from the middle);
  - the newest acknowledged record is always present;
  - nothing is returned that was never appended (the in-flight record may appear or not);
  - sequence numbers strictly increase across reboots (next_seq above everything acknowledged,
    and above the in-flight seq when that record survived).
A violation raises AssertionError with the round number. Used by tests and by `make torture`.
"""
from sim.nor import NorFlash, PowerCut
from umeter.store.journal import Journal


class _Rng:
    def __init__(self, seed):
        self.s = (seed * 2654435761 + 12345) & 0xFFFFFFFF or 1

    def next(self):
        x = self.s
        x ^= (x << 13) & 0xFFFFFFFF
        x ^= x >> 17
        x ^= (x << 5) & 0xFFFFFFFF
        self.s = x
        return x

    def below(self, n):
        return self.next() % n


class JournalTorture:
    name = "journal"

    def __init__(self, seed=1, sectors=10, sector_size=4096, max_ops=24):
        self.dev = NorFlash(sectors * sector_size, sector_size=sector_size, seed=seed)
        self.rng = _Rng(seed)
        self.max_ops = max_ops
        self.journal = Journal(self.dev)
        self.acked = []           # [(seq, payload)] still expected (pruned as retention drops them)
        self.max_acked = 0
        self.cuts = 0
        self.lost = 0             # acknowledged records missing (must stay 0)
        self.corrupt = 0          # records returned that were never appended / wrong content (must stay 0)
        self.inflight_kept = 0
        self.torn_skipped = 0     # torn slots the journal skipped (expected, not an error)
        self.appended = 0

    def _payload(self):
        rng = self.rng
        mp = self.journal.max_payload
        pick = rng.below(4)
        if pick == 0:
            n = 1 + rng.below(mp)
        elif pick == 1:
            n = 1 + rng.below(16)
        else:
            n = 1 + rng.below(200)
        tag = rng.next().to_bytes(4, "little")
        return (tag * (n // 4 + 1))[:n]

    def round(self):
        """One power cut and the checks after it. Returns nothing; raises AssertionError on a violation."""
        j = self.journal
        dev = self.dev
        dev.arm_cut(1 + self.rng.below(self.max_ops))
        inflight = None
        try:
            while True:
                p = self._payload()
                inflight = (j.next_seq, p)
                s = j.append(p)
                if s != inflight[0] or s <= self.max_acked:
                    raise AssertionError("round %d: append returned seq %d (expected %d, last acked %d)"
                                         % (self.cuts, s, inflight[0], self.max_acked))
                self.acked.append((s, p))
                self.max_acked = s
                self.appended += 1
                inflight = None
        except PowerCut:
            pass
        dev.power_on()
        self.cuts += 1
        j = self.journal = Journal(dev)
        self.check(j, inflight)

    def check(self, j, inflight):
        got = list(j.records())
        self.torn_skipped += j.stats()["corrupt_skipped"]
        acked = self.acked
        expected = {}
        for s, p in acked:
            expected[s] = p
        prev = 0
        first = got[0][0] if got else None
        survived = False
        for s, p in got:
            if s <= prev:
                raise AssertionError("round %d: seq %d after %d" % (self.cuts, s, prev))
            prev = s
            if s in expected:
                if expected[s] != p:
                    self.corrupt += 1
            elif inflight is not None and s == inflight[0] and p == inflight[1]:
                survived = True
                self.inflight_kept += 1
            else:
                self.corrupt += 1
        present = {}
        for s, _ in got:
            present[s] = True
        keep = []
        for s, p in acked:
            if first is not None and s >= first:
                if s not in present:
                    self.lost += 1
                keep.append((s, p))
        if acked and (first is None or acked[-1][0] < first):
            self.lost += 1            # even the newest acknowledged record is gone
        if survived:
            keep.append(inflight)
            self.max_acked = inflight[0]
        self.acked = keep
        if j.next_seq <= self.max_acked:
            raise AssertionError("round %d: next_seq %d not above %d"
                                 % (self.cuts, j.next_seq, self.max_acked))
        if self.lost or self.corrupt:
            raise AssertionError("round %d: lost %d, corrupt %d" % (self.cuts, self.lost, self.corrupt))

    def summary(self):
        return {"cuts": self.cuts, "lost": self.lost, "corrupt": self.corrupt, "appended": self.appended,
                "inflight_kept": self.inflight_kept, "torn_skipped": self.torn_skipped}


def run_rounds(n, seed=1, sectors=10, progress=None):
    """Run n rounds on a fresh simulated device; returns the summary dict."""
    t = JournalTorture(seed=seed, sectors=sectors)
    for i in range(n):
        t.round()
        if progress is not None:
            progress(i + 1, t)
    return t.summary()
