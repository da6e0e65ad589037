"""Power-cut torture for umeter.store.State, shared by the tests (CPython and the unix port) and by
`meterctl torture --target state` (host_tools/meterctl/torture_state.py).

One round: arm a cut at a random program/erase 1..max_ops from now, run random puts (sizes up to the
maximum, some triggering compaction), deletes and explicit compactions until the flash tears, power on,
remount, and check every key against the model of acknowledged operations:
  - an acknowledged put reads back with its latest value, an acknowledged delete stays gone;
  - the operation in flight when power failed reads as entirely old or entirely new;
  - nothing else appears.
A wrong result is `lost` when it is an older value (or a missing key) and `corrupt` when the value was
never written for that key. Runs unchanged under CPython and MicroPython (common subset only).
"""
import binascii

from sim.nor import NorFlash, PowerCut
from sim.rng import XorShift32
from umeter.store.region import Region
from umeter.store.errors import StoreError
from umeter.store.state import State, StateFull


class Rng(XorShift32):
    """The torture's generator: xorshift32 seeded its own way (sim/rng.py)."""

    def __init__(self, seed):
        XorShift32.__init__(self, (seed * 1103515245 + 12345) & 0xFFFFFFFF or 0x2545F491)


class _Counting:
    """Device proxy counting erases, so a round knows whether the cut hit a compaction."""

    def __init__(self, dev):
        self.dev = dev
        self.size = dev.size
        self.sector_size = dev.sector_size
        self.page_size = dev.page_size
        self.erases = 0

    def read(self, addr, n):
        return self.dev.read(addr, n)

    def readinto(self, addr, buf):
        self.dev.readinto(addr, buf)

    def program(self, addr, data):
        self.dev.program(addr, data)

    def erase_sector(self, addr):
        self.erases += 1
        self.dev.erase_sector(addr)


class StateTorture:
    def __init__(self, seed=0, sectors=3, sector_size=4096, guard=1, nkeys=20, max_ops=90):
        self.rng = Rng(seed)
        self.guard = guard
        self.ss = sector_size
        self.flash = NorFlash((sectors + 2 * guard) * sector_size, sector_size=sector_size, seed=seed + 1)
        # The store lives in a region with guard sectors around it that must stay erased.
        self.dev = _Counting(Region(self.flash, guard * sector_size, sectors * sector_size))
        self.max_ops = max_ops
        self.state = State.format(self.dev)
        self.keys = []
        while len(self.keys) < nkeys:
            n = 1 + self.rng.below(32)
            if self.rng.below(2):
                k = "k%d_" % len(self.keys) + "x" * n
                k = k[:32]
            else:
                k = bytes([len(self.keys)]) + self.rng.fill(n - 1)
            self.keys.append(k)
        self.model = {}      # bytes key -> latest acknowledged value (absent: deleted or never put)
        self.seen = {}       # bytes key -> set of CRCs of every value ever offered for it
        self.r = {"cuts": 0, "lost": 0, "corrupt": 0, "puts": 0, "deletes": 0, "compactions": 0,
                  "full": 0, "cuts_in_compaction": 0, "corrupt_skipped": 0, "rounds_without_cut": 0}

    @staticmethod
    def kb(key):
        return key.encode() if isinstance(key, str) else key

    def value(self):
        r = self.rng.below(100)
        vmax = self.state.max_value
        if r < 55:
            n = self.rng.below(33)
        elif r < 80:
            n = 33 + self.rng.below(168)
        elif r < 95:
            n = 201 + self.rng.below(400)
        else:
            n = 601 + self.rng.below(vmax - 600)
        return self.rng.fill(min(n, vmax))      # small sectors have a smaller maximum

    def round(self):
        """One cut (at most): operations until the flash tears, then remount and check."""
        rng, r = self.rng, self.r
        self.flash.arm_cut(1 + rng.below(self.max_ops))
        inflight = None
        erases0 = 0
        cut = False
        try:
            for _ in range(2000):
                key = self.keys[rng.below(len(self.keys))]
                kb = self.kb(key)
                op = rng.below(100)
                erases0 = self.dev.erases
                if op < 80:
                    v = self.value()
                    s = self.seen.setdefault(kb, set())
                    s.add(binascii.crc32(v))
                    inflight = (kb, self.model.get(kb), v)
                    try:
                        self.state.put(key, v)
                    except StateFull:
                        r["full"] += 1
                        inflight = None
                        victims = list(self.model)
                        key = victims[rng.below(len(victims))]
                        inflight = (key, self.model[key], None)
                        self.state.delete(key)
                        self.model.pop(key)
                        r["deletes"] += 1
                        inflight = None
                        continue
                    self.model[kb] = v
                    r["puts"] += 1
                elif op < 95:
                    inflight = (kb, self.model.get(kb), None)
                    self.state.delete(key)
                    self.model.pop(kb, None)
                    r["deletes"] += 1
                elif op < 98:
                    inflight = (None, None, None)      # a compaction changes no value
                    self.state.compact()
                    r["compactions"] += 1
                else:
                    got = self.state.get(key)
                    if got != self.model.get(kb):
                        r["corrupt"] += 1
                inflight = None
        except PowerCut:
            cut = True
        if not cut:
            self.flash.disarm_cut()
            r["rounds_without_cut"] += 1
        else:
            r["cuts"] += 1
            if self.dev.erases > erases0:
                r["cuts_in_compaction"] += 1
        self.flash.power_on()
        try:
            self.state = State(self.dev)
        except StoreError as e:            # mount must always succeed after a cut
            raise AssertionError("remount after cut %d failed: %s" % (r["cuts"], e))
        r["corrupt_skipped"] += self.state.stats()["corrupt_skipped"]
        self.check(inflight)

    def check(self, inflight):
        st, r, model = self.state, self.r, self.model
        for key in self.keys:
            kb = self.kb(key)
            got = st.get(kb)
            exp = model.get(kb)
            if inflight is not None and inflight[0] is not None and inflight[0] == kb:
                if got == inflight[1] or got == inflight[2]:
                    if got is None:
                        model.pop(kb, None)
                    else:
                        model[kb] = got
                    continue
            if got == exp:
                continue
            if got is None or binascii.crc32(got) in self.seen.get(kb, ()):
                r["lost"] += 1
            else:
                r["corrupt"] += 1
            if got is None:
                model.pop(kb, None)
            else:
                model[kb] = got
        live = st.keys()
        if len(live) != len(model):
            r["corrupt"] += 1
        for k in live:
            if k not in model:
                r["corrupt"] += 1

    def guards_blank(self):
        ss, g = self.ss, self.guard
        ff = b"\xff" * ss
        for s in list(range(g)) + list(range(self.flash.size // ss - g, self.flash.size // ss)):
            if self.flash.read(s * ss, ss) != ff:
                return False
        return True


def run(cuts, seed=0, progress=None, **kw):
    """Run rounds until `cuts` power cuts happened; returns the counters (see StateTorture.r)."""
    t = StateTorture(seed=seed, **kw)
    rounds = 0
    while t.r["cuts"] < cuts:
        t.round()
        rounds += 1
        if progress is not None and rounds % 100 == 0:
            progress(t.r)
    out = dict(t.r)
    out["guards_blank"] = t.guards_blank()
    out["erase_counts"] = t.state.stats()["erase_counts"]
    out["generation"] = t.state.stats()["generation"]
    return out
