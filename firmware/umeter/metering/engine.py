"""Metering engine: sample blocks -> whole-cycle windows -> RMS, powers, frequency -> integer
energy registers -> load profile records.

Time is the count of V,I pairs fed (never wall time). A window runs from one rising zero crossing
of V to the first crossing at least (window length - half a period) later, so it holds whole
mains cycles (about 1 s); the kernel's snapshot ends it inside a block in the same pass, and the
rest of that block starts the next window, so no sample is ever dropped or counted twice.
Without crossings (no voltage) a window ends at the first block end past 1.25 window lengths.
feed() = feed_block() (windows.py: kernel, window sums, crossings; no allocation, every block) and,
when a window ended, close_window() (the arithmetic below; a bounded allocation, PROFILE.md
"Memory"). A code outside the ADC width is clipped and counted by the kernel; rail and clipped
samples are reported per window (status "saturated", "sat_v", "sat_i", "clipped") and in the
profile record.

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

from micropython import const

from umeter.metering import obis
from umeter.metering.fixedpoint import div_round as _div_round
from umeter.metering.fixedpoint import fixed as _fixed
from umeter.metering.profile import (FLAG_CLAMPED, FLAG_INPUT_SATURATED, FLAG_NO_CYCLES,  # noqa: F401
                                     FLAG_PARTIAL, PROFILE_FORMAT, PROFILE_FORMAT_V1, PROFILE_SIZE,
                                     PROFILE_SIZE_V1, PROFILE_VERSION, LoadProfile, decode_profile)
from umeter.metering.windows import Windows

FRAC_BITS = const(24)  # FU per mWh = 2**24
SNAPSHOT_VERSION = const(1)
MAX_WINDOW = const(1 << 22)  # samples: keeps every window sum's halves small ints (kernels.py)


_FU_PER_J = (1 << FRAC_BITS) / 3.6
_TWO_PI = 2.0 * math.pi
_GATE_RUN = 8  # windows above 8 x threshold bypass the averaging group

DEFAULT_CALIB = {"v_gain": 1.0, "i_gain": 1.0, "phase_deg": 0.0, "v_offset": 0.0, "i_offset": 0.0,
                 "p_offset": 0.0, "q_offset": 0.0}


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
        self._cut = Windows(self.adc_bits, self.block_pairs, self.window_n)
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
        self._cut.reset(self.mid, max(0, self.mid - self._hyst))
        self._ws = t  # meter time (pairs) at the start of the window in progress (Python int)
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
        self._cut.arm = self.window_n - int(self.rate_hz / (2.0 * self._freq))

    @property
    def t(self):
        """Meter time: V,I pairs fed so far (since the engine's epoch)."""
        return self._ws + self._cut.pos + self._cut.pending()

    # --- the hot loop's Python side: once per block, allocation-free ---
    def feed(self, buf):
        """Process one block (the source's read_block() result). True when a window closed."""
        if self.feed_block(buf):
            self.close_window()
            return True
        return False

    def feed_block(self, buf):
        """The per-block half of feed(): kernel, window sums, crossings, using only small ints and
        preallocated arrays (windows.py; no allocation, tests/mpt_metering_alloc.py). True when a
        window ended in this block; close_window() must then run before the next block."""
        if buf is None:
            return False
        return self._cut.feed_block(buf)

    def end_window(self):
        """A clean stop (power-fail warning, reset): end the window in progress at the last sample
        fed, book it, and close the creep group. True if a window ended (a profile record that fell
        due is then waiting in pop_record())."""
        self.close_window()
        ended = self._cut.end_now()
        if ended:
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
        cut = self._cut
        if not cut.ready:
            return False
        n, sums, dv1, aligned_end, tf, tl, crossings, sat_v, sat_i, clipped = cut.ended()
        cut.done()
        end = self._ws + n
        self._ws = end
        sv, si, vv, ii, p0, p1 = sums
        sv1 = sv + dv1  # sum of v[k-1] over the window
        cvv = n * vv - sv * sv
        cii = n * ii - si * si
        c0 = n * p0 - sv * si
        c1 = n * p1 - sv1 * si
        c = self.calib
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
        cycles = crossings - 1
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
        z = self.mid + (2 * sv + n) // (2 * n)
        cut.set_level(z, max(0, z - self._hyst))
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
