"""Power-cut torture for the Journal (revision 3) on the NOR simulator (CPython and MicroPython alike).

One round: arm a cut (anywhere a few operations ahead; in the first append after a mount: brown-out
loops and double cuts; or at the next sector erase: the drop at wrap), append random records (1 byte,
max_payload and sizes between) until the cut tears one, power on, remount, and check the oracle:
  - every acknowledged record is present, intact and in order, except records older than the oldest
    one present (those only ring retention may drop, never from the middle), and the newest
    acknowledged record is always present;
  - nothing is returned that was never appended (the in-flight record may appear or not);
  - seqs strictly increase, and no seq is handed out twice: next_seq after a remount is above every seq
    any append returned, every seq whose payload program started (its ciphertext was on the bus, even
    if the cut came before a bit changed) and every seq ever visible;
  - last_seq is the seq of the newest record records() returns (0 when none).
A violation raises AssertionError with the round number. Also here: failing_chip() (programs stop
taking, erases still work) and bit_rot() (random flips in a mounted image). Used by the tests and by
`make torture` (meterctl.torture).
"""
from binascii import crc32

from sim.nor import NorFlash, PowerCut
from sim.rng import XorShift32
from umeter.store import StoreError
from umeter.store.journal import Journal


class ProgramSpy:
    """The flash device, noting whether the payload of the record being appended reached a program call:
    the journal programs the 8-byte record header alone first, every later program call of the same
    append carries payload bytes. Can tear the next erase (cut_next_erase) and drop programs (fail)."""

    def __init__(self, flash):
        self.f = flash
        self.size, self.sector_size, self.page_size = flash.size, flash.sector_size, flash.page_size
        self.readinto = flash.readinto
        self.watch = False
        self.header_seen = False
        self.started = False
        self.cut_next_erase = False
        self.fail = False

    def arm(self):
        self.watch, self.header_seen, self.started = True, False, False

    def read(self, addr, n):
        return self.f.read(addr, n)

    def erase_sector(self, addr):
        if self.cut_next_erase:
            self.cut_next_erase = False
            self.f.arm_cut(1)
        self.f.erase_sector(addr)

    def program(self, addr, data):
        if self.watch:
            if self.header_seen:
                self.started = True
            elif len(data) == 8 and addr % 16 == 0:     # a record header (JOURNAL.md 1.2)
                self.header_seen = True
        if self.fail:
            self.f._check_power()
            return                              # the chip says nothing, the bits stay
        self.f.program(addr, data)


class _Rng(XorShift32):
    def __init__(self, seed):
        XorShift32.__init__(self, (seed * 2654435761 + 12345) & 0xFFFFFFFF or 1)


def make_payload(rng, mp):
    pick = rng.below(8)
    if pick == 0:
        n = 1
    elif pick == 1:
        n = mp
    elif pick == 2:
        n = 1 + rng.below(mp)
    elif pick < 5:
        n = 1 + rng.below(16)
    else:
        n = 1 + rng.below(200)
    tag = rng.next().to_bytes(4, "little")
    return (tag * (n // 4 + 1))[:n]


class JournalTorture:
    name = "journal"

    def __init__(self, seed=1, sectors=10, sector_size=4096, max_ops=24, retention=False):
        self.dev = NorFlash(sectors * sector_size, sector_size=sector_size, seed=seed)
        self.spy = ProgramSpy(self.dev)
        self.rng = _Rng(seed)
        self.max_ops = max_ops
        self.retention = retention      # an on_drop callback appends a retention record at every drop
        self.inner = None               # the retention record being appended from on_drop
        self.drops = 0
        self.journal = self._mount()
        self.acked = []           # [(seq, payload)] still expected (pruned as retention drops them)
        self.top = 0              # highest seq returned, started or visible: next_seq must stay above
        self.cuts = 0
        self.lost = 0
        self.corrupt = 0
        self.inflight_kept = 0
        self.torn_skipped = 0
        self.appended = 0
        self.erase_cuts = 0
        self.brownouts = 0
        self.brownout_next = False

    def _mount(self):
        return Journal(self.spy, on_drop=self._on_drop if self.retention else None)

    def _on_drop(self, first, last):
        j = self.journal
        if not first <= last < j.next_seq:
            raise AssertionError("on_drop(%d, %d) with next seq %d" % (first, last, j.next_seq))
        if self.acked and self.acked[-1][0] >= j.next_seq:
            raise AssertionError("on_drop: next seq below an acknowledged record")
        p = b"drop %d..%d" % (first, last)
        self.inner = (j.next_seq, p)
        self.spy.arm()
        s = j.append(p)
        if s != self.inner[0] or s <= self.top:
            raise AssertionError("on_drop append returned seq %d (expected %d)" % (s, self.inner[0]))
        self.acked.append((s, p))
        self.top = s
        self.inner = None
        self.drops += 1

    def round(self):
        """One power cut and the checks after it (AssertionError on a violation)."""
        j = self.journal
        dev = self.dev
        spy = self.spy
        mode = self.rng.below(8)
        if self.brownout_next or mode == 0:
            dev.arm_cut(1 + self.rng.below(4))          # inside the first append after the mount
            self.brownouts += 1
        elif mode == 1:
            spy.cut_next_erase = True                   # the drop at wrap
            dev.arm_cut(3000)
        else:
            dev.arm_cut(1 + self.rng.below(self.max_ops))
        self.brownout_next = self.rng.below(4) == 0     # a double cut: the next boot is cut early too
        inflight = None
        try:
            while True:
                p = make_payload(self.rng, j.max_payload)
                inflight = None
                seq = j.make_room(len(p))       # a drop (and its retention record) happens here
                inflight = (seq, p)
                spy.arm()
                s = j.append(p)
                spy.watch = False
                if s != inflight[0] or s <= self.top:
                    raise AssertionError("round %d: append returned seq %d (expected %d, top %d)"
                                         % (self.cuts, s, inflight[0], self.top))
                self.acked.append((s, p))
                self.top = s
                self.appended += 1
                inflight = None
        except PowerCut:
            pass
        spy.watch = False
        if mode == 1 and not spy.cut_next_erase:
            self.erase_cuts += 1
        spy.cut_next_erase = False
        dev.disarm_cut()
        dev.power_on()
        cut = self.inner if self.inner is not None else inflight
        self.inner = None
        if cut is not None and spy.started and cut[0] > self.top:
            self.top = cut[0]
        self.cuts += 1
        j = self.journal = self._mount()
        self.check(j, cut)

    def check(self, j, inflight):
        got = list(j.records())
        self.torn_skipped += j.stats()["corrupt_skipped"]
        expected = {}
        for s, p in self.acked:
            expected[s] = p
        prev = 0
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
        first = got[0][0] if got else None
        present = set(s for s, _ in got)
        keep = []
        for s, p in self.acked:
            if first is not None and s >= first:
                if s not in present:
                    self.lost += 1
                keep.append((s, p))
        if self.acked and (first is None or self.acked[-1][0] < first):
            self.lost += 1            # even the newest acknowledged record is gone
        if survived:
            keep.append(inflight)
        self.acked = keep
        newest = got[-1][0] if got else 0
        if newest > self.top:
            self.top = newest
        if j.next_seq <= self.top:
            raise AssertionError("round %d: next_seq %d would reissue seq %d"
                                 % (self.cuts, j.next_seq, self.top))
        if j.last_seq != newest:
            raise AssertionError("round %d: last_seq %d but the newest record is %d"
                                 % (self.cuts, j.last_seq, newest))
        if self.lost or self.corrupt:
            raise AssertionError("round %d: lost %d, corrupt %d" % (self.cuts, self.lost, self.corrupt))

    def summary(self):
        return {"cuts": self.cuts, "lost": self.lost, "corrupt": self.corrupt, "appended": self.appended,
                "inflight_kept": self.inflight_kept, "torn_skipped": self.torn_skipped,
                "brownouts": self.brownouts, "erase_cuts": self.erase_cuts, "drops": self.drops}


def run_rounds(n, seed=1, sectors=10, progress=None, max_ops=24, retention=False):
    """Run n rounds on a fresh simulated device; returns the summary dict."""
    t = JournalTorture(seed=seed, sectors=sectors, max_ops=max_ops, retention=retention)
    for i in range(n):
        t.round()
        if progress is not None:
            progress(i + 1, t)
    return t.summary()


def failing_chip(seed=1, sectors=3, records=40, attempts=6):
    """Programs stop taking (silently) while erases still work: each append raises StoreError
    ("worn out") at the latest on its read-back, at most the sector written to is given up, every
    older record stays readable, no seq comes back. Returns the number of worn-out errors seen."""
    rng = _Rng(seed)
    f = NorFlash(sectors * 4096, seed=seed)
    spy = ProgramSpy(f)
    j = Journal(spy)
    acked = []
    for _ in range(records + rng.below(records)):
        p = make_payload(rng, j.max_payload)
        acked.append((j.append(p), p))
    before = list(j.records())
    top = j.last_seq
    spy.fail = True
    worn = 0
    for boot in range(attempts):
        erases = f.stats()["erases"]
        for _ in range(3):
            try:
                j.append(make_payload(rng, j.max_payload))
                raise AssertionError("an append on a chip that does not program returned")
            except StoreError as e:
                if "worn out" not in str(e):
                    raise AssertionError("unexpected StoreError: %s" % e)
                worn += 1
        if f.stats()["erases"] - erases > 1:
            raise AssertionError("boot %d: a failing chip lost %d sectors in one boot"
                                 % (boot, f.stats()["erases"] - erases))
        j = Journal(spy)
        got = list(j.records())
        if j.next_seq <= top:
            raise AssertionError("boot %d: next_seq %d not above %d" % (boot, j.next_seq, top))
        for s, p in got:
            if (s, p) not in before:
                raise AssertionError("boot %d: record %d was never acknowledged" % (boot, s))
        # at most one sector's worth (the one erased for the failed open) of the oldest records gone
        if got != before[len(before) - len(got):] or (len(got) < len(before) and boot == 0 and
                                                     len(before) - len(got) > j.capacity(1)):
            raise AssertionError("boot %d: older records lost on a failing chip" % boot)
        before = got
    return worn


def bit_rot(seed=1, sectors=5, flips=8, rounds=10):
    """Random bit flips in a mounted image: mounting, walking and appending raise nothing but
    StoreError, and never return a payload that was not appended under that seq."""
    rng = _Rng(seed)
    for r in range(rounds):
        f = NorFlash(sectors * 4096, seed=seed * 100 + r)
        j = Journal(f)
        written = {}
        for _ in range(30 + rng.below(200)):
            p = make_payload(rng, 300)
            written[j.append(p)] = crc32(p)
        used = [a for a in range(0, f.size, 7) if f._mem[a] != 0xFF]
        for _ in range(1 + rng.below(flips)):
            a = used[rng.below(len(used))] if rng.below(4) else rng.below(f.size)
            f._mem[a] ^= 1 << rng.below(8)
        try:
            for s, p in j.records():            # the mounted journal, walking the rotted image
                if written.get(s) != crc32(p):
                    raise AssertionError("round %d: seq %d returned a payload never appended" % (r, s))
            j2 = Journal(f)
            prev = 0
            for s, p in j2.records():
                if written.get(s) != crc32(p) or s <= prev:
                    raise AssertionError("round %d: seq %d corrupt or out of order after a remount"
                                         % (r, s))
                prev = s
            top = max(written)
            s = j2.append(b"after the rot")
            if s <= top and s in written:
                raise AssertionError("round %d: seq %d handed out twice" % (r, s))
        except StoreError:
            pass
