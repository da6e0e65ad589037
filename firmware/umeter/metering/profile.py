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
# Minimisation (RECORDS.md 2.1): which optional fields a stored record keeps; the four energy deltas are
# always kept (they are what a load profile is for). Version 3 records carry the mask.
PROFILE_VERSION_V3 = const(3)
PROFILE_HEAD_V3 = "<BBHBIIIII"  # version, flags, minutes, fields, t_end_s, 1.8.0 2.8.0 3.8.0 4.8.0 deltas
FIELD_VOLTAGE = const(1)     # 32.3.0 32.5.0 32.6.0: min/avg/max voltage (u16 each, 10 mV)
FIELD_DEMAND = const(2)      # 1.6.0: maximum demand (u32 mW)
FIELD_SATURATION = const(4)  # samples at or beyond the ADC's range (u32)
FIELDS_ALL = const(7)        # the default: everything, stored as a version 2 record as before
FIELDS_ENERGY = const(0)     # energy deltas only
_OPTIONAL = (FIELD_VOLTAGE, "HHH"), (FIELD_DEMAND, "I"), (FIELD_SATURATION, "I")
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


def _v3_format(fields):
    fmt = PROFILE_HEAD_V3
    for bit, part in _OPTIONAL:
        if fields & bit:
            fmt += part
    return fmt


def _raw(rec):
    """(version, fields, [flags, minutes, t_end_s, d x 4, vmin, vavg, vmax, dmax, sat]) of a record of any
    version; a field the record does not hold is None. ValueError for anything else."""
    n = len(rec)
    if n == PROFILE_SIZE and rec[0] == PROFILE_VERSION:
        return PROFILE_VERSION, FIELDS_ALL, list(struct.unpack(PROFILE_FORMAT, rec)[1:])
    if n == PROFILE_SIZE_V1 and rec[0] == 1:
        return 1, FIELDS_ALL, list(struct.unpack(PROFILE_FORMAT_V1, rec)[1:]) + [None]
    if n > 4 and rec[0] == PROFILE_VERSION_V3 and not rec[4] & ~FIELDS_ALL:
        fields = rec[4]
        fmt = _v3_format(fields)
        if n == struct.calcsize(fmt):
            f = struct.unpack(fmt, rec)
            out = [f[1], f[2], f[4], f[5], f[6], f[7], f[8]]
            k = 9
            for bit, part in _OPTIONAL:
                width = len(part)
                out.extend(f[k:k + width] if fields & bit else (None,) * width)
                k += width if fields & bit else 0
            return PROFILE_VERSION_V3, fields, out
    raise ValueError("not a version 3, %d or 1 profile record (%d bytes)" % (PROFILE_VERSION, n))


def minimise(rec, fields):
    """The record as stored with only `fields` (FIELD_* bits): a version 3 record (RECORDS.md 2.1), or rec
    itself when it holds exactly those fields already. ValueError for unknown bits or a bad record."""
    if not isinstance(fields, int) or fields & ~FIELDS_ALL or fields < 0:
        raise ValueError("profile fields must be a mask of FIELD_* bits (0..%d)" % FIELDS_ALL)
    version, have, f = _raw(rec)
    if have == fields:
        return rec
    keep = fields & have
    if f[11] is None:
        keep &= ~FIELD_SATURATION       # a version 1 record did not count them
    vals = [PROFILE_VERSION_V3, f[0], f[1], keep] + f[2:7]
    k = 7
    for bit, part in _OPTIONAL:
        if keep & bit:
            vals.extend(f[k:k + len(part)])
        k += len(part)
    return packing.pack(_v3_format(keep), *vals)


def decode_profile(rec):
    """A load-profile record (bytes, version 3, 2 or 1) -> dict keyed by field / OBIS code (PROFILE.md,
    RECORDS.md 2.1). A field the record does not hold is None ("sat_samples" in version 1, the fields
    left out of a minimised version 3 record); "fields" is the FIELD_* mask of a version 3 record and
    FIELDS_ALL for versions 1 and 2 (every field their layout has)."""
    version, fields, f = _raw(rec)
    return {"version": version, "flags": f[0], "minutes": f[1], "t_end_s": f[2], "fields": fields,
            obis.A_IMPORT: f[3], obis.A_EXPORT: f[4], obis.R_IMPORT: f[5], obis.R_EXPORT: f[6],
            obis.VOLTAGE_MIN: _scaled(f[7], 100.0), obis.VOLTAGE_AVG: _scaled(f[8], 100.0),
            obis.VOLTAGE_MAX: _scaled(f[9], 100.0), obis.DEMAND_MAX: _scaled(f[10], 1000.0),
            "sat_samples": f[11]}


def _scaled(v, div):
    return None if v is None else v / div
