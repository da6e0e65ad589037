"""Metering engine: sample blocks -> whole-cycle windows -> RMS, powers, frequency -> integer
energy registers -> load profile records.

Time is the count of V,I pairs fed (never wall time). A window runs from one rising zero crossing
of V to the first crossing at least (window length - half a period) later, so it holds whole
mains cycles (about 1 s); the kernel's snapshot ends it inside a block in the same pass, and the
rest of that block starts the next window, so no sample is ever dropped or counted twice.
Without crossings (no voltage) a window ends at the first block end past 1.25 window lengths.

Per window, with N samples and the kernel's exact integer sums (Python ints):
    DC removal (emonLibCM style, no filter to settle): C_xy = N * sum(xy) - sum(x) * sum(y)
    Vrms = kv * sqrt(C_vv / (N * T)), Irms likewise (kv, ki: volts/amperes per LSB times gain;
    T = the window's duration in samples between its sub-sample crossings, N when not aligned)
    phase: the I sample is late by skew_us and the sensor leads by calib phase_deg, together an
    angle d at the fundamental; with t = 2*pi*f/rate (one sample) and C0 = C(v, i),
    C1 = C(v[k-1], i):  P = C0 cos d - sin d (C1 - C0 cos t) / sin t,
                        Q = C0 sin d + cos d (C1 - C0 cos t) / sin t
    which is interpolation between adjacent V samples with weights that are exact at the
    fundamental (plain linear interpolation loses up to 0.1 % at half a sample).
Energy: the coefficients are turned into integers (24-bit float mantissas on the target) and the
window energy is an integer in fine units FU = 1 mWh / 2**24 (0.21 uJ) computed from the integer
sums, rounded once per window. Registers are Python ints of FU: adding is exact, nothing is ever
accumulated in floats, so 20 years of windows sum exactly.
Creep and start: a window whose |P| is at least 8 x the creep threshold (default: half of
0.001 In at Un, 1.15 W on the sim board) goes straight to the registers; smaller windows are held
in a group of about 10 s that is committed only if its mean |P| reaches the threshold (noise
averages down by sqrt(10), a 0.001 In load does not). Reactive energy is gated the same way.
Load profile: every `profile_min` minutes of engine time (at the window end nearest the
boundary) a record (PROFILE.md) with the energy deltas, min/avg/max window voltage and the largest
`demand_s` block demand.
"""
import math
import struct
from array import array

from micropython import const

from umeter.metering import kernels
from umeter.metering import obis
from umeter.metering.profile import (FLAG_CLAMPED, FLAG_INPUT_SATURATED, FLAG_NO_CYCLES,  # noqa: F401
                                     FLAG_PARTIAL, PROFILE_FORMAT, PROFILE_FORMAT_V1, PROFILE_SIZE,
                                     PROFILE_SIZE_V1, PROFILE_VERSION, LoadProfile)

FRAC_BITS = const(24)  # FU per mWh = 2**24
SNAPSHOT_VERSION = const(1)
MAX_WINDOW = const(1 << 22)  # samples: keeps every window sum's halves small ints (kernels.py)

# The engine's per-window small ints (array('i', _WIN_LEN)): the window in progress at 0.._WIN-1,
# the window that ended (waiting for close_window()) copied to _C.._C+_WIN-1, then its extras.
# A crossing is 3 ints: i, num, den with time i + num / den samples after the window start
# (den = 0: none yet), so no float is made per block.
_TF = const(0)  # first rising crossing of the window
_TL = const(3)  # last rising crossing
_NC = const(6)  # rising crossings
_VBEFORE = const(7)  # raw V of the sample before the window's first
_WIN = const(8)
_C = const(8)
_C_N = const(16)  # samples in the ended window
_C_VLAST = const(17)  # its last raw V
_C_ALIGNED = const(18)  # 1: it ended on a crossing
_WIN_LEN = const(19)

_FU_PER_J = (1 << FRAC_BITS) / 3.6
_TWO_PI = 2.0 * math.pi
_GATE_RUN = 8  # windows above 8 x threshold bypass the averaging group

DEFAULT_CALIB = {"v_gain": 1.0, "i_gain": 1.0, "phase_deg": 0.0, "v_offset": 0.0, "i_offset": 0.0,
                 "p_offset": 0.0, "q_offset": 0.0}


def _fixed(coefs):
    """Floats -> (integers, shift) with coef ~= int / 2**shift, the largest using ~30 bits.
    One frexp and one list: this runs once per window (PROFILE.md "Memory")."""
    big = 0.0
    for c in coefs:
        if c > big:
            big = c
        elif -c > big:
            big = -c
    if not big:
        return [0] * len(coefs), 0
    sh = 30 - math.frexp(big)[1]
    return [int(math.floor(math.ldexp(c, sh) + 0.5)) for c in coefs], sh


def _div_round(num, sh, n):
    """round(num / (n * 2**sh)) for ints (sh may be negative)."""
    if sh >= 0:
        den = n << sh
    else:
        num <<= -sh
        den = n
    return (num + (den >> 1)) // den


class Engine:
    """Turns sample blocks into windows, registers and load-profile records."""

    def __init__(self, rate_hz, adc_bits, block_pairs, skew_us=0, v_peak_fs=400.0, i_peak_fs=100.0,
                 u_nominal=230.0, i_nominal=10.0, f_nominal=50.0, calib=None, window_s=1.0,
                 profile_min=15, demand_s=60, start_frac=0.001, gate_s=10.0):
        if not 1 <= profile_min <= 60:
            raise ValueError("profile_min must be 1..60")
        if demand_s <= 0 or (profile_min * 60) % demand_s:
            raise ValueError("demand_s must divide the profile interval")
        self.rate_hz = int(rate_hz)
        self.adc_bits = int(adc_bits)
        self.block_pairs = int(block_pairs)
        self.window_n = int(window_s * self.rate_hz + 0.5)
        if self.block_pairs > self.window_n // 2:
            raise ValueError("a block must be at most half a window")
        if self.window_n > MAX_WINDOW:
            raise ValueError("a window must be at most %d samples" % MAX_WINDOW)
        self.skew_us = skew_us
        self.mid = 1 << (self.adc_bits - 1)
        self._v_lsb = v_peak_fs / self.mid
        self._i_lsb = i_peak_fs / self.mid
        self.u_nominal = u_nominal
        self.i_nominal = i_nominal
        self.f_nominal = f_nominal
        self.profile_min = int(profile_min)
        self._gate_n = int(gate_s * self.rate_hz)
        self.creep_w = 0.5 * start_frac * u_nominal * i_nominal
        self._st = kernels.new_state(self.adc_bits, self.block_pairs)
        self._win = array("i", bytes(4 * _WIN_LEN))
        self._timeout_rel = self.window_n + self.window_n // 4
        self._hyst = max(2, int(0.05 * u_nominal * 1.4142 / self._v_lsb))
        self.set_calibration(calib)
        self._reg = [0, 0, 0, 0]  # FU, order of obis.REGISTERS
        self.profile = LoadProfile(self.rate_hz, self.profile_min, demand_s, self.window_n,
                                   self._registers_fu, self.flush)
        self.status = None
        self.windows = 0
        self.saturated_windows = 0  # windows with a sample at or beyond the ADC's range
        self.clipped_codes = 0  # codes above the configured ADC width (clipped), since start
        self._reset_time(0, partial=False)

    @classmethod
    def for_source(cls, src, **kw):
        """An engine matching a sample source (rate, bits, block size, skew)."""
        return cls(src.rate_hz, src.adc_bits, src.block_pairs, skew_us=src.skew_us, **kw)

    # --- configuration ---
    def set_calibration(self, calib=None):
        c = dict(DEFAULT_CALIB)
        for k in calib or {}:
            if k not in c:
                raise ValueError("unknown calibration key %r" % k)
            c[k] = float(calib[k])
        self.calib = c
        self._kv = self._v_lsb * c["v_gain"]
        self._ki = self._i_lsb * c["i_gain"]
        # per-window constants, computed once here rather than in every close_window()
        self._g = self._kv * self._ki / self.rate_hz * _FU_PER_J  # FU per (LSB**2 * sample)
        self._d_per_hz = _TWO_PI * self.skew_us * 1e-6  # skew angle per Hz
        self._d0 = math.radians(c["phase_deg"])
        self._v_off2 = c["v_offset"] ** 2
        self._i_off2 = c["i_offset"] ** 2

    def _reset_time(self, t, partial):
        st = self._st
        st[kernels.ARMED] = 0
        st[kernels.VPREV] = self.mid
        st[kernels.ZC] = self.mid
        st[kernels.ZL] = max(0, self.mid - self._hyst)
        for k in range(kernels.W_BASE, kernels.STATE_LEN):
            st[k] = 0
        win = self._win
        for k in range(_WIN_LEN):
            win[k] = 0
        win[_VBEFORE] = self.mid
        self._ws = t  # meter time (pairs) at the start of the window in progress (Python int)
        self._pos = 0  # pairs of that window fed so far (a small int: the per-block clock)
        self._ready = False  # a window ended: close_window() is due
        self.t_committed = t  # end of the last closed window
        self._freq = self.f_nominal
        self._set_arm()
        self._aligned = False
        self._pend = [0, 0, 0, 0]
        self._pend_p = 0
        self._pend_q = 0
        self._pend_n = 0
        self.profile.reset(t, partial)

    def _set_arm(self):
        # a window may end at the first crossing past (window length - half a period)
        self._arm_rel = self.window_n - int(self.rate_hz / (2.0 * self._freq))

    @property
    def t(self):
        """Meter time: V,I pairs fed so far (since the engine's epoch)."""
        return self._ws + self._pos + (self._win[_C_N] if self._ready else 0)

    # --- the hot loop's Python side: once per block, allocation-free ---
    def feed(self, buf):
        """Process one block (the source's read_block() result). True when a window closed."""
        if self.feed_block(buf):
            self.close_window()
            return True
        return False

    def feed_block(self, buf):
        """The per-block half of feed(): kernel, window sums, crossings, using only small ints and
        preallocated arrays (no allocation, tests/mpt_metering_alloc.py). True when a window ended
        in this block; close_window() must then run before the next block."""
        if buf is None:
            return False
        if self._ready:
            raise RuntimeError("close_window() is due")
        st = self._st
        win = self._win
        pos0 = self._pos
        n = self.block_pairs
        arm = self._arm_rel - pos0
        st[kernels.STOP] = 0 if arm <= 0 else (arm if arm < n else kernels.NEVER)
        zc = st[kernels.ZC]  # close_window() moves it for the next block
        nc = kernels.block(buf, st)
        timeout = pos0 + n >= self._timeout_rel
        kernels.fold(st, 1 if timeout else 0)
        if st[kernels.SNAP]:  # the window ends at a crossing inside this block
            snc = st[kernels.SNAP_NC]
            if snc and not win[_TF + 2]:
                _crossing(win, _TF, pos0, st, kernels.FC_J, zc)
            j = st[kernels.SNAP_J]
            _crossing(win, _TL, pos0, st, kernels.SNAP_J, zc)
            if not win[_TF + 2]:
                _copy(win, _TL, _TF, 3)
            win[_NC] += snc + 1
            _copy(win, 0, _C, _WIN)
            win[_C_N] = pos0 + j
            win[_C_VLAST] = st[kernels.SNAP_VB]
            win[_C_ALIGNED] = 1
            # the new window starts at sample j, on the snapshot crossing
            self._pos = n - j
            win[_VBEFORE] = st[kernels.SNAP_VB]
            win[_TL] -= pos0 + j
            _copy(win, _TL, _TF, 3)
            win[_NC] = 1
            rest = nc - snc - 1
            if rest:
                _crossing(win, _TL, -j, st, kernels.LC_J, zc)
                win[_NC] += rest
            self._ready = True
            return True
        if nc:
            if not win[_TF + 2]:
                _crossing(win, _TF, pos0, st, kernels.FC_J, zc)
            _crossing(win, _TL, pos0, st, kernels.LC_J, zc)
            win[_NC] += nc
        if timeout:  # no crossing ended it: it ends with this block
            self._end_here(pos0 + n)
            return True
        self._pos = pos0 + n
        return False

    def _end_here(self, length):
        """The window in progress (its sums already folded into CW_*) ends after `length` samples,
        at the last sample fed, not on a crossing; the next one starts empty."""
        win = self._win
        vlast = self._st[kernels.VPREV]
        _copy(win, 0, _C, _WIN)
        win[_C_N] = length
        win[_C_VLAST] = vlast
        win[_C_ALIGNED] = 0
        self._pos = 0
        for k in range(_WIN):
            win[k] = 0
        win[_VBEFORE] = vlast
        self._ready = True

    def end_window(self):
        """A clean stop (power-fail warning, reset): end the window in progress at the last sample
        fed, book it, and close the creep group. True if a window ended (a profile record that fell
        due is then waiting in pop_record())."""
        if self._ready:
            self.close_window()
        ended = self._pos > 0
        if ended:
            st = self._st
            for k in range(kernels.SV, kernels.SV + kernels.ACC_LEN):  # an empty block
                st[k] = 0
            st[kernels.SNAP] = 0
            kernels.fold(st, 1)
            self._end_here(self._pos)
            self.close_window()
        self.flush()
        return ended

    def run(self, src, blocks):
        """Feed `blocks` blocks from a source; returns the number of windows closed."""
        closed = 0
        for _ in range(blocks):
            if self.feed(src.read_block()):
                closed += 1
        return closed

    # --- once per window: bounded allocation (PROFILE.md "Memory") ---
    def close_window(self):
        """The per-window half of feed(): RMS, powers, frequency, energy into the registers, status,
        load profile. Returns False when no window was due."""
        if not self._ready:
            return False
        self._ready = False
        win = self._win
        st = self._st
        n = win[_C_N]
        end = self._ws + n
        self._ws = end
        sv, si, vv, ii, p0, p1 = kernels.window_value(st, kernels.CW_BASE)
        sat_v = st[kernels.CW_BASE + 12]
        sat_i = st[kernels.CW_BASE + 13]
        clipped = st[kernels.CW_BASE + 14]
        mid = self.mid
        sv1 = sv - (win[_C_VLAST] - mid) + (win[_C + _VBEFORE] - mid)  # sum of v[k-1] over the window
        cvv = n * vv - sv * sv
        cii = n * ii - si * si
        c0 = n * p0 - sv * si
        c1 = n * p1 - sv1 * si
        c = self.calib
        aligned_end = win[_C_ALIGNED] == 1
        tf = _ctime(win, _C + _TF)
        tl = _ctime(win, _C + _TL)
        aligned = self._aligned and aligned_end
        # whole cycles last tl - tf samples (sub-sample crossings), not n: dividing by it
        # removes the +-1 sample (0.1 % at 1 kHz) granularity from RMS and power
        neff = tl - tf if aligned else float(n)
        vrms = self._kv * math.sqrt(cvv / (n * neff))
        irms = self._ki * math.sqrt(cii / (n * neff))
        if self._v_off2:
            vrms = math.sqrt(max(0.0, vrms * vrms - self._v_off2))
        if self._i_off2:
            irms = math.sqrt(max(0.0, irms * irms - self._i_off2))
        freq = 0.0
        cycles = win[_C + _NC] - 1
        if cycles >= 1 and tf is not None and tl > tf:
            freq = cycles * self.rate_hz / (tl - tf)
            self._freq = freq
        self._set_arm()  # the window in progress arms with the newest frequency
        f = self._freq
        th = _TWO_PI * f / self.rate_hz
        d = self._d_per_hz * f + self._d0
        csc = 1.0 / math.sin(th)
        cot = math.cos(th) * csc
        sd = math.sin(d)
        cd = math.cos(d)
        g = self._g
        m, sh = _fixed([g * (cd + sd * cot), -g * sd * csc, g * (sd - cd * cot), g * cd * csc])
        e_p = _div_round(m[0] * c0 + m[1] * c1, sh, n)
        e_q = _div_round(m[2] * c0 + m[3] * c1, sh, n)
        if c["p_offset"]:  # over the n samples the energy covers
            e_p += int(math.floor(c["p_offset"] * n / self.rate_hz * _FU_PER_J + 0.5))
        if c["q_offset"]:
            e_q += int(math.floor(c["q_offset"] * n / self.rate_hz * _FU_PER_J + 0.5))
        saturated = sat_v + sat_i + clipped
        # both channels clipped: their harmonics meet in the quadrature sum (exact only at the
        # fundamental) and would make up reactive power that is not there; none is booked
        q_valid = not (sat_v and sat_i)
        if not q_valid:
            e_q = 0
        dur = neff / self.rate_hz
        p = e_p / (_FU_PER_J * dur)
        q = e_q / (_FU_PER_J * dur)
        s = vrms * irms
        self._aligned = aligned_end
        self.commit_window(e_p, e_q, n)
        self.windows += 1
        if saturated:
            self.saturated_windows += 1
            self.clipped_codes += clipped
        self.t_committed = end
        # one status dict, updated in place: a window costs its values, not a new table
        ws = self.status
        if ws is None:
            ws = self.status = {}
        ws["t"] = end
        ws["n"] = n
        ws["cycles"] = max(0, cycles) if aligned else 0
        ws["aligned"] = aligned
        ws[obis.VOLTAGE] = vrms
        ws[obis.CURRENT] = irms
        ws[obis.P_IMPORT] = p if p > 0 else 0.0
        ws[obis.P_EXPORT] = -p if p < 0 else 0.0
        ws[obis.Q_IMPORT] = q if q > 0 else 0.0
        ws[obis.Q_EXPORT] = -q if q < 0 else 0.0
        ws[obis.S_APPARENT] = s
        ws[obis.POWER_FACTOR] = p / s if s else 0.0
        ws[obis.FREQUENCY] = freq
        ws["p"] = p
        ws["q"] = q
        ws["e_p_fu"] = e_p
        ws["e_q_fu"] = e_q
        ws["creep"] = abs(p) < self.creep_w
        ws["v_dc_lsb"] = sv / n
        ws["i_dc_lsb"] = si / n
        ws["saturated"] = saturated > 0
        ws["sat_v"] = sat_v
        ws["sat_i"] = sat_i
        ws["clipped"] = clipped
        ws["q_valid"] = q_valid
        # the next windows look for crossings around this window's DC level
        z = mid + (2 * sv + n) // (2 * n)
        st[kernels.ZC] = z
        st[kernels.ZL] = max(0, z - self._hyst)
        self.profile.window(end, vrms, n, freq > 0, sat_v + sat_i)
        return True

    def commit_window(self, e_p, e_q, n):
        """Book one window's signed active and reactive energy (ints, FU) lasting n samples into
        the registers, through the creep / starting gate. Called for every window; public so that
        register arithmetic can be exercised on its own."""
        dur = n * _FU_PER_J / self.rate_hz
        p = e_p / dur
        q = e_q / dur
        run = _GATE_RUN * self.creep_w
        reg, pend = self._reg, self._pend
        if abs(p) >= run:
            reg[0 if e_p > 0 else 1] += abs(e_p)
        else:
            pend[0 if e_p > 0 else 1] += abs(e_p)
            self._pend_p += e_p
        if abs(q) >= run:
            reg[2 if e_q > 0 else 3] += abs(e_q)
        else:
            pend[2 if e_q > 0 else 3] += abs(e_q)
            self._pend_q += e_q
        self._pend_n += n
        if self._pend_n >= self._gate_n:
            self.flush()

    def flush(self):
        """Close the creep group now: commit its energy if its mean power reaches the threshold,
        else drop it (no-load noise)."""
        n = self._pend_n
        if n:
            th = int(self.creep_w * n / self.rate_hz * _FU_PER_J)
            pend, reg = self._pend, self._reg
            if abs(self._pend_p) >= th:
                reg[0] += pend[0]
                reg[1] += pend[1]
            if abs(self._pend_q) >= th:
                reg[2] += pend[2]
                reg[3] += pend[3]
        self._pend = [0, 0, 0, 0]
        self._pend_p = self._pend_q = self._pend_n = 0

    # --- load profile ---
    def pop_record(self):
        """The oldest load-profile record not yet taken (bytes, PROFILE.md), or None."""
        return self.profile.pop_record()

    @property
    def records(self):
        """Load-profile records not yet popped (oldest first)."""
        return self.profile.records

    def _registers_fu(self):
        return self._reg

    # --- registers ---
    def registers(self):
        """Energy registers as whole units: {obis: mWh (mvarh) int}."""
        return {code: self._reg[k] >> FRAC_BITS for k, code in enumerate(obis.REGISTERS)}

    def register_fu(self, code):
        """A register exactly, in FU (1 mWh / 2**24)."""
        return self._reg[obis.REGISTERS.index(code)]

    def snapshot(self):
        """The registers and engine time as a list of ints (for checkpoints):
        [SNAPSHOT_VERSION, FRAC_BITS, t, fu_1.8.0, fu_2.8.0, fu_3.8.0, fu_4.8.0]."""
        return [SNAPSHOT_VERSION, FRAC_BITS, self.t] + list(self._reg)

    def restore(self, snap):
        """Resume from snapshot(): registers and time; the sample stream starts anew (a reboot),
        so the current window and profile interval restart at the restored time."""
        if len(snap) != 7 or snap[0] != SNAPSHOT_VERSION or snap[1] != FRAC_BITS:
            raise ValueError("not a version %d register snapshot" % SNAPSHOT_VERSION)
        for v in snap[2:]:
            if not isinstance(v, int) or v < 0:
                raise ValueError("snapshot values must be non-negative ints")
        self._reg = list(snap[3:7])
        self._reset_time(snap[2], partial=True)


def _crossing(win, at, pos, st, j, zc):
    """Store the kernel's crossing at st[j:j+3] (index, V before, V after) as win[at:at+3], its
    time counted from `pos` samples before the block's first sample."""
    vb = st[j + 1]
    win[at] = pos + st[j] - 1
    win[at + 1] = zc - vb
    win[at + 2] = st[j + 2] - vb


def _copy(win, src, dst, n):
    for k in range(n):
        win[dst + k] = win[src + k]


def _ctime(win, at):
    """A stored crossing's time (float samples after the window start), or None."""
    den = win[at + 2]
    return win[at] + win[at + 1] / den if den else None


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
