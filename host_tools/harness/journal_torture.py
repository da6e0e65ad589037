"""Power-cut torture for the Journal on the NOR simulator (CPython and MicroPython alike).

One round: arm a cut at a random program/erase a few operations ahead, append random records until
the cut tears one, power on, remount, and check the oracle:
  - every append that returned is present, intact and in order, except records older than the
    oldest one present (those may only have been dropped by ring retention, never from the middle);
  - the newest acknowledged record is always present;
  - nothing is returned that was never appended (the in-flight record may appear or not);
  - sequence numbers strictly increase across reboots (next_seq above everything acknowledged,
    and above the in-flight seq when that record survived);
  - no seq is reissued once a program of its record's bytes was started, even one cut before it
    changed a bit: a spy on the device's program calls notes every seq whose body reached a program
    call; next_seq after a remount must be above all of them, and append must never return one of
    them for a different payload (the sealer uses seqs as nonces);
  - last_seq is the seq of the newest record records() returns (0 when none).
A violation raises AssertionError with the round number. Used by tests and by `make torture`.
"""
from binascii import crc32

from sim.nor import NorFlash, PowerCut
from sim.rng import XorShift32
from umeter.store.journal import Journal


def _le(v, n):
    return bytes((v >> (8 * k)) & 0xFF for k in range(n))


def record_body(seq, payload):
    """The bytes the journal programs for a record, after its commit byte (JOURNAL.md 1.2)."""
    head = _le(seq, 6) + _le(len(payload), 2)
    return head + _le(crc32(payload, crc32(head)), 4) + payload


class ProgramSpy:
    """The flash device, noting whether a program call carried bytes of the record being appended
    (set .body first). Pieces of two or more bytes are matched inside the body; a one-byte piece only
    as the body's first byte at the end of a page (the journal splits programs at page boundaries)."""

    def __init__(self, flash):
        self.f = flash
        self.size, self.sector_size, self.page_size = flash.size, flash.sector_size, flash.page_size
        self.readinto = flash.readinto
        self.body = None
        self.started = False

    def read(self, addr, n):
        return self.f.read(addr, n)

    def erase_sector(self, addr):
        self.f.erase_sector(addr)

    def note(self, addr, data):
        b = self.body
        if b is not None and not self.started:
            d = bytes(data)
            if len(d) >= 2:
                self.started = d in b
            else:
                self.started = (addr + 1) % self.page_size == 0 and d == b[:1]

    def program(self, addr, data):
        self.note(addr, data)
        self.f.program(addr, data)


class _Rng(XorShift32):
    def __init__(self, seed):
        XorShift32.__init__(self, (seed * 2654435761 + 12345) & 0xFFFFFFFF or 1)


class JournalTorture:
    name = "journal"

    def __init__(self, seed=1, sectors=10, sector_size=4096, max_ops=24):
        self.dev = NorFlash(sectors * sector_size, sector_size=sector_size, seed=seed)
        self.spy = ProgramSpy(self.dev)
        self.rng = _Rng(seed)
        self.max_ops = max_ops
        self.journal = Journal(self.spy)
        self.started = {}         # seq -> crc32 of the payload whose body reached a program call
        self.max_started = 0
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
        spy = self.spy
        try:
            while True:
                p = self._payload()
                inflight = (j.next_seq, p)
                spy.body, spy.started = record_body(inflight[0], p), False
                try:
                    s = j.append(p)
                finally:
                    self._note_started(inflight)
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
        j = self.journal = Journal(spy)
        self.check(j, inflight)

    def _note_started(self, inflight):
        spy = self.spy
        s, p = inflight
        fp = crc32(p)
        if spy.started:
            old = self.started.get(s)
            if old is not None and old != fp:
                raise AssertionError("round %d: seq %d programmed again for another payload after a "
                                     "cut had started its program" % (self.cuts, s))
            self.started[s] = fp
            if s > self.max_started:
                self.max_started = s
        spy.body = None

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
        if j.next_seq <= self.max_started:
            raise AssertionError("round %d: next_seq %d would reissue seq %d, whose program had started"
                                 % (self.cuts, j.next_seq, self.max_started))
        newest = got[-1][0] if got else 0
        if j.last_seq != newest:
            raise AssertionError("round %d: last_seq %d but the newest record is %d"
                                 % (self.cuts, j.last_seq, newest))
        if self.lost or self.corrupt:
            raise AssertionError("round %d: lost %d, corrupt %d" % (self.cuts, self.lost, self.corrupt))

    def summary(self):
        return {"cuts": self.cuts, "lost": self.lost, "corrupt": self.corrupt, "appended": self.appended,
                "inflight_kept": self.inflight_kept, "torn_skipped": self.torn_skipped,
                "started": len(self.started)}


def run_rounds(n, seed=1, sectors=10, progress=None):
    """Run n rounds on a fresh simulated device; returns the summary dict."""
    t = JournalTorture(seed=seed, sectors=sectors)
    for i in range(n):
        t.round()
        if progress is not None:
            progress(i + 1, t)
    return t.summary()
