"""Engine stand-in for boards with a metering IC (ATM90E32): the chip samples and integrates energy;
this polls it once per second and keeps the same registers, status, snapshot and load profile as
Engine, so the app does not care which one it has. Registers: the checkpointed base (in FU, its
sub-mWh remainder kept across restarts) plus the chip's energy since start, in the Engine's fine
units (1 mWh / 2**24): unbounded ints, exact for 20 years and beyond (the checkpoint record holds
them to 2**64 mWh, RECORDS.md 3). Meter time is in seconds (one poll per second of board time), so
the profile boundaries fall on whole polls. A poll is this engine's window: its allocation (the
driver's reading dict, the status, a few big ints) is bounded and measured in tests/mpt_atm90e32.py;
there is no per-block path."""
import time

from umeter.hal.atm90e32 import engine_status
from umeter.metering import obis
from umeter.metering.profile import LoadProfile

FRAC_BITS = 24
SNAPSHOT_VERSION = 1


class IcTicker:
    """Sample-source look-alike for an IC board: one 'sample' per second of board time."""

    rate_hz = 1
    adc_bits = 0
    skew_us = 0
    block_pairs = 1

    def __init__(self, ticks_ms=None):
        self._ticks = ticks_ms or time.ticks_ms
        self._last = None

    def start(self):
        self._last = self._ticks()

    def stop(self):
        pass

    def read_block(self):
        now = self._ticks()
        if self._last is None:
            self._last = now
        if time.ticks_diff(now, self._last) < 1000:
            return None
        self._last = time.ticks_add(self._last, 1000)
        return True


class IcEngine:
    rate_hz = 1  # meter time unit: one poll per second

    def __init__(self, chip, phase=None, profile_min=15, demand_s=60):
        self.chip = chip
        self.phase = phase
        self.t = 0
        self.windows = 0
        self.status = None
        self._base_fu = [0, 0, 0, 0]  # registers (FU) at the last restore
        self._at_base = [0, 0, 0, 0]  # the driver's cumulative mWh then (it counts from configure())
        self._now = [0, 0, 0, 0]  # the driver's cumulative mWh at the last poll
        self._fu = [0, 0, 0, 0]  # the registers, FU, updated in place
        self.profile = LoadProfile(1, profile_min, demand_s, 1, self._registers_fu, _nothing)
        self.profile.reset(0, False)

    def feed(self, tick):
        if tick is None:
            return False
        st = engine_status(self.chip.reading(self.phase))
        now, fu, base, at = self._now, self._fu, self._base_fu, self._at_base
        for k in range(4):
            now[k] = st[obis.REGISTERS[k]]
            fu[k] = base[k] + ((now[k] - at[k]) << FRAC_BITS)
        self.t += 1
        self.windows += 1
        st["t"] = self.t
        self.status = st
        self.profile.window(self.t, _voltage(st), 1, st[obis.FREQUENCY] > 0)
        return True

    def end_window(self):
        """A clean stop: nothing is held back (every poll is booked when it is read)."""
        return False

    def registers(self):
        """Energy registers as whole units: {obis: mWh (mvarh) int}."""
        return {code: self._fu[k] >> FRAC_BITS for k, code in enumerate(obis.REGISTERS)}

    def register_fu(self, code):
        """A register exactly, in FU (1 mWh / 2**24)."""
        return self._fu[obis.REGISTERS.index(code)]

    def _registers_fu(self):
        return self._fu

    def snapshot(self):
        return [SNAPSHOT_VERSION, FRAC_BITS, self.t] + list(self._fu)

    def restore(self, snap):
        if len(snap) != 7 or snap[0] != SNAPSHOT_VERSION or snap[1] != FRAC_BITS:
            raise ValueError("not a version %d register snapshot" % SNAPSHOT_VERSION)
        for v in snap[2:]:
            if not isinstance(v, int) or v < 0:
                raise ValueError("snapshot values must be non-negative ints")
        self.t = snap[2]
        self._base_fu = list(snap[3:7])
        self._at_base = list(self._now)
        self._fu = list(self._base_fu)
        self.profile.reset(self.t, True)

    def pop_record(self):
        return self.profile.pop_record()


def _voltage(status):
    """The window voltage whichever phase the chip reports (L1, L2 or L3 code)."""
    for code in (obis.VOLTAGE, "52.7.0", "72.7.0"):
        if code in status:
            return status[code]
    return 0.0


def _nothing():
    pass
