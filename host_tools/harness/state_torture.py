"""Power-cut torture for umeter.store.State, shared by the tests (CPython and the unix port) and by
`meterctl torture --target state` (host_tools/meterctl/torture_state.py).

Two drivers, one oracle:
- sweep(): an exhaustive sweep, as ESP-IDF's NVS tests do. A short fixed workload starting on a blank
  device (so it includes the very first format) is run once to count its programs and erases (N);
  then, for every k in 1..N, it is run again with power cut at operation k, remounted and checked.
  With `second` > 0 a second cut is armed right after each first one, at every j in 1..second (a cut
  during mount-time recovery and during the first operations after it). Every run then finishes the
  workload without cuts, and the final store must equal the uncut run's.
- run(): random rounds. Arm a cut at a random program/erase 1..max_ops from now, run random puts
  (sizes up to the maximum, some triggering compaction), deletes and explicit compactions until the
  flash tears, power on, remount and check. One round in `fresh_every` starts over on a blank device,
  cutting the first format too.

The oracle (Oracle.check) after every cut: every key reads as its last acknowledged value; the
operation in flight reads entirely old or entirely new; no other key appears. A wrong result is
`lost` when it is an older value or a missing key, `corrupt` when that value was never written for
that key. Runs unchanged under CPython and MicroPython (common subset only).
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
    """Device proxy counting programs and erases (sweep length; did a cut hit a compaction?)."""

    def __init__(self, dev):
        self.dev = dev
        self.size = dev.size
        self.sector_size = dev.sector_size
        self.page_size = dev.page_size
        self.erases = 0
        self.programs = 0

    def read(self, addr, n):
        return self.dev.read(addr, n)

    def readinto(self, addr, buf):
        self.dev.readinto(addr, buf)

    def program(self, addr, data):
        self.programs += 1
        self.dev.program(addr, data)

    def erase_sector(self, addr):
        self.erases += 1
        self.dev.erase_sector(addr)


def _kb(key):
    return key.encode() if isinstance(key, str) else key


class Oracle:
    """What State must show: acknowledged values, plus the one operation in flight."""

    def __init__(self):
        self.model = {}          # bytes key -> latest acknowledged value (absent: deleted/never put)
        self.seen = {}           # bytes key -> set of CRCs of every value ever offered for it
        self.inflight = None     # (key, old value, new value or None for a delete) until acknowledged
        self.lost = 0
        self.corrupt = 0

    def begin(self, kb, new):
        if new is not None:
            self.seen.setdefault(kb, set()).add(binascii.crc32(new))
        self.inflight = (kb, self.model.get(kb), new)

    def ack(self):
        kb, _, new = self.inflight
        if new is None:
            self.model.pop(kb, None)
        else:
            self.model[kb] = new
        self.inflight = None

    def check(self, st, keys):
        """Compare a freshly mounted store with the model; adopt what it shows (so one wrong value is
        counted once); returns the number of problems found."""
        before = self.lost + self.corrupt
        model, inflight = self.model, self.inflight
        for kb in keys:
            got = st.get(kb)
            if inflight is not None and inflight[0] == kb and (got == inflight[1] or got == inflight[2]):
                pass
            elif got == model.get(kb):
                pass
            elif got is None or binascii.crc32(got) in self.seen.get(kb, ()):
                self.lost += 1
            else:
                self.corrupt += 1
            if got is None:
                model.pop(kb, None)
            else:
                model[kb] = got
        live = st.keys()
        if len(live) != len(model):
            self.corrupt += 1
        for k in live:
            if k not in model:
                self.corrupt += 1
        self.inflight = None
        return self.lost + self.corrupt - before


# --- exhaustive sweep -----------------------------------------------------------------------------
def workload(sector_size):
    """A short fixed workload: puts of growing size (two or three compactions on 2 x 1 KiB sectors),
    overwrites, deletes of present and absent keys, an explicit compaction, a put carried by one."""
    ops = []
    step = sector_size // 28
    for i in range(6):
        ops.append(("put", b"k%d" % (i % 4), bytes([0x30 + i]) * (8 + step * i)))
    ops.append(("delete", b"k1"))
    ops.append(("delete", b"absent"))
    ops.append(("compact",))
    big = sector_size // 5
    for i in range(5):
        ops.append(("put", b"k%d" % (i % 3), bytes([0x60 + i]) * (big - 20 * i)))
    ops.append(("put", "text key", b""))
    ops.append(("delete", b"k2"))
    ops.append(("put", b"k1", b"back"))
    return ops


_SWEEP_KEYS = [b"k0", b"k1", b"k2", b"k3", b"absent", b"text key"]


def _attempt(dev, ops, start, oracle, out):
    """Mount (checking the store against the oracle), then run ops[start:]. Returns the index of the
    op a power cut interrupted (the mount counts as op `start`: it is run again), or -1 when done."""
    try:
        st = State(dev)
    except PowerCut:
        out["cuts_in_mount"] += 1
        return start
    except StoreError as e:
        raise AssertionError("mount after a cut failed: %s" % e)
    if oracle.check(st, _SWEEP_KEYS):
        out["failed_at"] = out.get("failed_at") or (out["k"], out["j"], start)
    i = start
    try:
        while i < len(ops):
            op = ops[i]
            if op[0] == "put":
                oracle.begin(_kb(op[1]), op[2])
                st.put(op[1], op[2])
                oracle.ack()
            elif op[0] == "delete":
                oracle.begin(_kb(op[1]), None)
                st.delete(op[1])
                oracle.ack()
            else:
                st.compact()
            i += 1
    except PowerCut:
        return i                     # the interrupted op is run again after the remount
    return -1


def _fresh(sectors, sector_size, seed):
    flash = NorFlash((sectors + 2) * sector_size, sector_size=sector_size, seed=seed)
    return flash, _Counting(Region(flash, sector_size, sectors * sector_size))


def _guards_blank(flash, ss):
    ff = b"\xff" * ss
    return flash.read(0, ss) == ff and flash.read(flash.size - ss, ss) == ff


def sweep(sectors=2, sector_size=1024, second=0, seed=0):
    """Cut at every program/erase of workload(); see the module docstring. Returns counters."""
    ops = workload(sector_size)
    out = {"ops": 0, "runs": 0, "cuts": 0, "cuts_in_mount": 0, "lost": 0, "corrupt": 0,
           "first_format_cuts": 0, "uncut_runs": 0, "guards_blank": True, "k": 0, "j": 0, "failed_at": None}
    flash, dev = _fresh(sectors, sector_size, seed)
    ref = Oracle()
    assert _attempt(dev, ops, 0, ref, out) == -1        # the uncut run, from the first format on
    total = out["ops"] = dev.programs + dev.erases
    final = dict(ref.model)
    for k in range(1, total + 1):
        for j in range(0, second + 1):
            out["k"], out["j"] = k, j
            flash, dev = _fresh(sectors, sector_size, seed + k)
            oracle = Oracle()
            flash.arm_cut(k)
            in_mount = out["cuts_in_mount"]
            at = _attempt(dev, ops, 0, oracle, out)
            if at < 0:
                out["uncut_runs"] += 1               # only a store that writes differently each run
            if out["cuts_in_mount"] > in_mount:
                out["first_format_cuts"] += 1        # the first mount of a blank device formats it
            if j:
                flash.arm_cut(j)     # the next cut: during the mount's recovery, or just after it
            while at >= 0:
                out["cuts"] += 1
                flash.power_on()
                at = _attempt(dev, ops, at, oracle, out)
            flash.disarm_cut()
            oracle.check(State(dev), _SWEEP_KEYS)
            if oracle.model != final:
                oracle.lost += 1     # the store did not end where the uncut run ended
                out["failed_at"] = out["failed_at"] or (k, j, "final")
            out["lost"] += oracle.lost
            out["corrupt"] += oracle.corrupt
            out["runs"] += 1
            out["guards_blank"] = out["guards_blank"] and _guards_blank(flash, sector_size)
    return out


# --- random rounds --------------------------------------------------------------------------------
class StateTorture:
    def __init__(self, seed=0, sectors=3, sector_size=4096, guard=1, nkeys=20, max_ops=90, fresh_every=25):
        self.rng = Rng(seed)
        self.guard = guard
        self.ss = sector_size
        self.sectors = sectors
        self.seed = seed
        self.fresh_every = fresh_every
        self.flash = None
        self._new_device()
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
        self.oracle = Oracle()
        self.r = {"cuts": 0, "lost": 0, "corrupt": 0, "puts": 0, "deletes": 0, "compactions": 0,
                  "full": 0, "cuts_in_compaction": 0, "corrupt_skipped": 0, "rounds_without_cut": 0,
                  "first_format_cuts": 0, "fresh_devices": 0}
        self._guards_ok = True

    def _new_device(self):
        if self.flash is not None:
            self._guards_ok = self._guards_ok and self.guards_blank()
        g, ss = self.guard, self.ss
        self.flash = NorFlash((self.sectors + 2 * g) * ss, sector_size=ss, seed=self.seed + 1)
        # The store lives in a region with guard sectors around it that must stay erased.
        self.dev = _Counting(Region(self.flash, g * ss, self.sectors * ss))

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
        rng, r, oracle = self.rng, self.r, self.oracle
        fresh = self.fresh_every and rng.below(self.fresh_every) == 0
        if fresh:
            self._new_device()
            self.oracle = oracle = Oracle()
            r["fresh_devices"] += 1
        self.flash.arm_cut(1 + rng.below(self.max_ops))
        erases0 = 0
        cut = False
        try:
            if fresh:
                try:
                    self.state = State(self.dev)     # the very first format, under the armed cut
                except PowerCut:
                    r["first_format_cuts"] += 1
                    raise
            for _ in range(2000):
                key = self.keys[rng.below(len(self.keys))]
                kb = _kb(key)
                op = rng.below(100)
                erases0 = self.dev.erases
                if op < 80:
                    v = self.value()
                    oracle.begin(kb, v)
                    try:
                        self.state.put(key, v)
                    except StateFull:
                        r["full"] += 1
                        oracle.inflight = None
                        victims = list(oracle.model)
                        victim = victims[rng.below(len(victims))]
                        oracle.begin(victim, None)
                        self.state.delete(victim)
                        oracle.ack()
                        r["deletes"] += 1
                        continue
                    oracle.ack()
                    r["puts"] += 1
                elif op < 95:
                    oracle.begin(kb, None)
                    self.state.delete(key)
                    oracle.ack()
                    r["deletes"] += 1
                elif op < 98:
                    self.state.compact()               # a compaction changes no value
                    r["compactions"] += 1
                elif self.state.get(key) != oracle.model.get(kb):
                    oracle.corrupt += 1
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
        lost, corrupt = oracle.lost, oracle.corrupt
        oracle.check(self.state, [_kb(k) for k in self.keys])
        r["lost"] += oracle.lost - lost
        r["corrupt"] += oracle.corrupt - corrupt
        oracle.lost = oracle.corrupt = 0

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
    out["guards_blank"] = t._guards_ok and t.guards_blank()
    out["erase_counts"] = t.state.stats()["erase_counts"]
    out["generation"] = t.state.stats()["generation"]
    return out
