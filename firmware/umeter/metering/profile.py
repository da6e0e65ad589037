"""Load profile: every `profile_min` minutes of meter time, one record (PROFILE.md) with the energy
register deltas, min/avg/max window voltage and the largest `demand_s` block demand.

Shared by the sample engine (engine.py) and the metering-IC engine (ic_engine.py). Time is in samples
of `rate_hz`; registers are read live through `registers()` (4 ints in FU = 1 mWh / 2**FRAC_BITS),
and `flush()` closes any energy the caller still holds back (the creep gate) before a boundary."""
import struct

from micropython import const

from umeter.metering import obis, packing

FRAC_BITS = const(24)
PROFILE_VERSION = const(2)
PROFILE_FORMAT = "<BBHIIIIIHHHII"
PROFILE_SIZE = struct.calcsize(PROFILE_FORMAT)  # 38
PROFILE_FORMAT_V1 = "<BBHIIIIIHHHI"  # version 1 (34 bytes): still decoded, no longer written
PROFILE_SIZE_V1 = struct.calcsize(PROFILE_FORMAT_V1)
FLAG_PARTIAL = const(1)  # the interval did not start at its boundary (start or restore inside it)
FLAG_NO_CYCLES = const(2)  # some window had no zero crossings (voltage missing or too low)
FLAG_CLAMPED = const(4)  # a delta, the demand or a count did not fit its field and was clamped
FLAG_INPUT_SATURATED = const(8)  # some sample was at or beyond the ADC's range (v2)
MAX_RECORDS = const(8)  # kept until popped; the oldest is dropped beyond this
_U32 = const(0xFFFFFFFF)


class LoadProfile:
    def __init__(self, rate_hz, profile_min, demand_s, window_n, registers, flush):
        if not 1 <= profile_min <= 60:
            raise ValueError("profile_min must be 1..60")
        if demand_s <= 0 or (profile_min * 60) % demand_s:
            raise ValueError("demand_s must divide the profile interval")
        self.rate_hz = rate_hz
        self.profile_min = profile_min
        self._prof_n = profile_min * 60 * rate_hz
        self._dem_n = int(demand_s) * rate_hz
        self._half_window = window_n // 2
        self._registers = registers
        self._flush = flush
        self.records = []
        self.max_records = MAX_RECORDS

    def reset(self, t, partial):
        """Start counting at meter time t (start-up or a restore)."""
        reg = self._registers()
        self._prof_next = (t // self._prof_n + 1) * self._prof_n
        self._prof_start = list(reg)
        self._prof_flags = FLAG_PARTIAL if partial or t % self._prof_n else 0
        self._clear_interval()
        self._dem_next = (t // self._dem_n + 1) * self._dem_n
        self._dem_t = t
        self._dem_e = reg[0]

    def _clear_interval(self):
        self._prof_vmin = 0xFFFF
        self._prof_vmax = 0
        self._prof_vsum = 0
        self._prof_vn = 0
        self._prof_dmax = 0
        self._prof_sat = 0

    def window(self, end, vrms, n, has_cycles, saturated=0):
        """Account one closed window of n samples ending at meter time `end`; `saturated`: its
        samples at or beyond the ADC's range (V and I counted apart)."""
        v = int(vrms * 100.0 + 0.5)
        if v > 0xFFFF:
            v = 0xFFFF
            self._prof_flags |= FLAG_CLAMPED
        if saturated:
            self._prof_sat += saturated
            self._prof_flags |= FLAG_INPUT_SATURATED
        if v < self._prof_vmin:
            self._prof_vmin = v
        if v > self._prof_vmax:
            self._prof_vmax = v
        self._prof_vsum += v * n
        self._prof_vn += n
        if not has_cycles:
            self._prof_flags |= FLAG_NO_CYCLES
        near = end + self._half_window  # a period closes at the window end nearest its boundary
        if near >= self._dem_next:
            self._flush()
            reg = self._registers()
            de = reg[0] - self._dem_e
            # mW = mWh * 3600 / s = (FU / 2**24) * 3600 * rate / samples
            dem = (de * 3600 * self.rate_hz) // ((end - self._dem_t) << FRAC_BITS)
            if dem > self._prof_dmax:
                self._prof_dmax = dem
            self._dem_e = reg[0]
            self._dem_t = end
            while self._dem_next <= near:
                self._dem_next += self._dem_n
        if near >= self._prof_next:
            self._flush()
            self._emit(self._prof_next)
            while self._prof_next <= near:
                self._prof_next += self._prof_n
            self._prof_start = list(self._registers())
            self._prof_flags = 0
            self._clear_interval()

    def _emit(self, boundary):
        flags = self._prof_flags
        reg = self._registers()
        deltas = []
        for k in range(4):
            d = (reg[k] >> FRAC_BITS) - (self._prof_start[k] >> FRAC_BITS)
            if d > _U32:
                d = _U32
                flags |= FLAG_CLAMPED
            deltas.append(d)
        dmax = self._prof_dmax
        if dmax > _U32:
            dmax = _U32
            flags |= FLAG_CLAMPED
        sat = self._prof_sat
        if sat > _U32:
            sat = _U32
            flags |= FLAG_CLAMPED
        vn = self._prof_vn
        vavg = (self._prof_vsum + vn // 2) // vn if vn else 0
        vmin = self._prof_vmin if vn else 0
        # t_end_s is refused rather than clamped: past 2**32 s (136 years of meter time) it is a bug
        rec = packing.pack(PROFILE_FORMAT, PROFILE_VERSION, flags, self.profile_min,
                           boundary // self.rate_hz, deltas[0], deltas[1], deltas[2], deltas[3],
                           vmin, vavg, self._prof_vmax, dmax, sat)
        self.records.append(rec)
        if len(self.records) > self.max_records:
            self.records.pop(0)

    def pop_record(self):
        """The oldest record not yet taken (bytes), or None."""
        return self.records.pop(0) if self.records else None


def decode_profile(rec):
    """A load-profile record (bytes, version 2 or 1) -> dict keyed by field / OBIS code (PROFILE.md).
    "sat_samples" is None in a version 1 record (it did not count them)."""
    if len(rec) == PROFILE_SIZE and rec[0] == PROFILE_VERSION:
        f = struct.unpack(PROFILE_FORMAT, rec)
        sat = f[12]
    elif len(rec) == PROFILE_SIZE_V1 and rec[0] == 1:
        f = struct.unpack(PROFILE_FORMAT_V1, rec)
        sat = None
    else:
        raise ValueError("not a version %d (or 1) profile record" % PROFILE_VERSION)
    return {"version": f[0], "flags": f[1], "minutes": f[2], "t_end_s": f[3],
            obis.A_IMPORT: f[4], obis.A_EXPORT: f[5], obis.R_IMPORT: f[6], obis.R_EXPORT: f[7],
            obis.VOLTAGE_MIN: f[8] / 100.0, obis.VOLTAGE_AVG: f[9] / 100.0, obis.VOLTAGE_MAX: f[10] / 100.0,
            obis.DEMAND_MAX: f[11] / 1000.0, "sat_samples": sat}
