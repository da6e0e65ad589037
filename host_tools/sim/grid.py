"""Grid simulator: synthesises the interleaved V,I ADC stream of the `sim` board from a scenario.

Runs unchanged under CPython and MicroPython (common subset only) and produces bit-identical
streams in both: the waveform comes from an integer phase accumulator and a sine table, the noise
from a private xorshift32 generator seeded by the scenario (never `random`).

Scenario (a dict or a JSON string; every key optional):
  vrms, irms        RMS of the fundamental (V, A)                          230.0, 5.0
  phase_deg         current lags voltage by this angle (+ inductive, - capacitive; |x| > 90 exports)  0
  freq_hz           mains frequency                                         50.0
  harmonics         [[order, v_pct, i_pct(, phase_deg)], ...]: % of the fundamental's RMS, phase =
                    the harmonic current's lag behind the harmonic voltage  []
  dc_lsb            DC offset added to both channels (number, or [v, i])   0
  noise_lsb         uniform noise +-noise_lsb added to each sample before rounding   0
  adc_bits          ADC resolution, 8..16                                   12
  skew_us           the I sample is taken this long after its V sample      0
  ct_phase_deg      the current sensor's output leads the true current by this angle at the
                    fundamental (modelled as a time advance: h times that angle at harmonic h)  0
  seed              noise seed                                              1
  rate_hz           V,I pairs per second                                    4000
  block_pairs       pairs per block returned by read_block()               200

Board scaling (sim board): ADC full scale is +-400 V peak and +-100 A peak, mid-scale code
2**(adc_bits-1) is 0 V / 0 A; nominal 230 V, In 10 A.

The analytic truth (truth(), truth_energy_j()) is computed from the scenario itself, never from the
generated samples, so a meter under test is measured against physics and not against this
generator's rounding. The generator's own error is tiny: the table interpolation is exact to
3e-7 of the amplitude and the phase step to 5e-7 Hz.
"""
import json
import math
from array import array

V_PEAK_FS = 400.0
I_PEAK_FS = 100.0
U_NOMINAL = 230.0
I_NOMINAL = 10.0

DEFAULTS = {
    "vrms": 230.0, "irms": 5.0, "phase_deg": 0.0, "freq_hz": 50.0, "harmonics": [],
    "dc_lsb": 0, "noise_lsb": 0, "adc_bits": 12, "skew_us": 0, "ct_phase_deg": 0.0, "seed": 1,
    "rate_hz": 4000, "block_pairs": 200,
}

_TAB_BITS = 10  # 1,025 float32 entries: 4 KB (a list of boxed floats was ~98 KB on 32-bit ports)
_FRAC_BITS = 32 - _TAB_BITS
_FRAC_MASK = (1 << _FRAC_BITS) - 1
_FRAC_SCALE = 1.0 / (1 << _FRAC_BITS)
_M32 = 0xFFFFFFFF
_TWO_PI = 2.0 * math.pi
_SQRT2 = math.sqrt(2.0)
_TABLE = None


def _sine_table():
    global _TABLE
    if _TABLE is None:
        n = 1 << _TAB_BITS
        table = array("f")  # built by appending: never a list of n + 1 boxed floats on the heap
        for k in range(n + 1):
            table.append(math.sin(_TWO_PI * k / n))
        _TABLE = table
    return _TABLE


def _turns(deg):
    """An angle in degrees as a phase-accumulator offset (2**32 per turn)."""
    return int(math.floor(deg / 360.0 * 4294967296.0 + 0.5)) & _M32


def _number(sc, key, lo=None, lo_open=False, hi=None):
    """sc[key] as a float: a real number (not a string, bool or NaN), within the bounds given."""
    v = sc[key]
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ValueError("%s must be a number, not %r" % (key, v))
    v = float(v)
    if not math.isfinite(v):
        raise ValueError("%s must be a finite number, not %r" % (key, v))
    if lo is not None and (v <= lo if lo_open else v < lo):
        raise ValueError("%s must be %s %g, not %g" % (key, ">" if lo_open else ">=", lo, v))
    if hi is not None and v > hi:
        raise ValueError("%s must be <= %g, not %g" % (key, hi, v))
    return v


def _integer(sc, key, lo, hi=None):
    v = _number(sc, key, lo, hi=hi)
    if v != math.floor(v):
        raise ValueError("%s must be a whole number, not %g" % (key, v))
    return int(v)


def validate(sc):
    """Refuse a scenario that makes no physical sense, with the reason (ValueError). sc holds every key
    of DEFAULTS (and no other). Zero vrms / irms are allowed (no voltage, no load); negative are not."""
    for k in sc:
        if k not in DEFAULTS:
            raise ValueError("unknown scenario key %r" % k)
    _number(sc, "vrms", 0.0)
    _number(sc, "irms", 0.0)
    _number(sc, "phase_deg", -360.0, hi=360.0)
    _number(sc, "ct_phase_deg", -90.0, hi=90.0)
    _number(sc, "skew_us", -1e6, hi=1e6)
    _number(sc, "noise_lsb", 0.0)
    _integer(sc, "adc_bits", 8, hi=16)
    _integer(sc, "seed", 0, hi=4294967295)
    rate = _integer(sc, "rate_hz", 1)
    _integer(sc, "block_pairs", 1)
    f = _number(sc, "freq_hz", 0.0, lo_open=True)
    if not 2 * f < rate:
        raise ValueError("freq_hz %g is not below Nyquist (rate_hz %d / 2)" % (f, rate))
    dc = sc["dc_lsb"]
    if isinstance(dc, (list, tuple)):
        if len(dc) != 2:
            raise ValueError("dc_lsb must be a number or [v, i], not %r" % (dc,))
        _number({"dc_lsb[0]": dc[0]}, "dc_lsb[0]")
        _number({"dc_lsb[1]": dc[1]}, "dc_lsb[1]")
    else:
        _number(sc, "dc_lsb")
    hs = sc["harmonics"]
    if not isinstance(hs, (list, tuple)):
        raise ValueError("harmonics must be a list of [order, v_pct, i_pct(, phase_deg)]")
    for h in hs:
        if not isinstance(h, (list, tuple)) or len(h) not in (3, 4):
            raise ValueError("harmonic %r must be [order, v_pct, i_pct(, phase_deg)]" % (h,))
        item = {"harmonic order": h[0], "harmonic v_pct": h[1], "harmonic i_pct": h[2],
                "harmonic phase_deg": h[3] if len(h) > 3 else 0.0}
        order = _integer(item, "harmonic order", 2)
        if not 2 * order * f < rate:
            raise ValueError("harmonic order %d (%g Hz) is not below Nyquist (rate_hz %d / 2)"
                             % (order, order * f, rate))
        _number(item, "harmonic v_pct", 0.0)
        _number(item, "harmonic i_pct", 0.0)
        _number(item, "harmonic phase_deg", -360.0, hi=360.0)


class Grid:
    """A sample source (see notes/sampling.md) fed by a scenario."""

    def __init__(self, scenario=None, **overrides):
        if isinstance(scenario, str):
            scenario = json.loads(scenario)
        sc = dict(DEFAULTS)
        for src in (scenario or {}), overrides:
            for k in src:
                if k not in DEFAULTS:
                    raise ValueError("unknown scenario key %r" % k)
                sc[k] = src[k]
        validate(sc)
        self.scenario = sc
        bits = int(sc["adc_bits"])
        self.adc_bits = bits
        self.rate_hz = int(sc["rate_hz"])
        self.block_pairs = int(sc["block_pairs"])
        self.skew_us = sc["skew_us"]
        self.mid = 1 << (bits - 1)
        self.v_per_lsb = V_PEAK_FS / self.mid
        self.a_per_lsb = I_PEAK_FS / self.mid
        dc = sc["dc_lsb"]
        self._dc = (float(dc[0]), float(dc[1])) if isinstance(dc, (list, tuple)) else (float(dc), float(dc))
        self._noise = float(sc["noise_lsb"])
        self._phase = 0
        f = float(sc["freq_hz"])
        self._inc = int(math.floor(f / self.rate_hz * 4294967296.0 + 0.5)) & _M32
        self._x = (int(sc["seed"]) ^ 0x9E3779B9) & _M32 or 1
        # Components as (order, peak amplitude in LSB, phase offset in accumulator units).
        # The I sample is late by skew_us (phase +h*w*s) and the sensor leads by ct (+h*ct).
        lag = sc["skew_us"] * 1e-6 * f * 360.0 + sc["ct_phase_deg"]
        vcomp = [(1, sc["vrms"], 0.0)]
        icomp = [(1, sc["irms"], sc["phase_deg"])]
        for h in sc["harmonics"]:
            order = int(h[0])
            vcomp.append((order, sc["vrms"] * h[1] / 100.0, 0.0))
            icomp.append((order, sc["irms"] * h[2] / 100.0, h[3] if len(h) > 3 else 0.0))
        self._vc = [(h, _SQRT2 * r / self.v_per_lsb, _turns(0.0)) for h, r, _ in vcomp if r]
        self._ic = [(h, _SQRT2 * r / self.a_per_lsb, _turns(h * lag - ph)) for h, r, ph in icomp if r]
        self._vcomp = vcomp
        self._icomp = icomp
        n2 = 2 * self.block_pairs
        self._bufs = (array("H", bytes(2 * n2)), array("H", bytes(2 * n2)))
        self._which = 0
        self.pairs_done = 0

    # --- the sample-source interface ---
    def start(self):
        pass

    def stop(self):
        pass

    def read_block(self):
        buf = self._bufs[self._which]
        self._which ^= 1
        self._fill(buf)
        return buf

    # --- generation ---
    def _rand(self):
        x = self._x
        x ^= (x << 13) & _M32
        x ^= x >> 17
        x ^= (x << 5) & _M32
        self._x = x
        return x

    def _fill(self, buf):
        tab = _sine_table()
        vc, ic = self._vc, self._ic
        v1 = vc[0] if len(vc) == 1 and vc[0][0] == 1 else None
        i1 = ic[0] if len(ic) == 1 and ic[0][0] == 1 else None
        noise = self._noise
        nscale = 2.0 * noise / 4294967296.0
        dv = self.mid + self._dc[0] - noise + 0.5
        di = self.mid + self._dc[1] - noise + 0.5
        top = (1 << self.adc_bits) - 1
        ph, inc, x = self._phase, self._inc, self._x
        fb, fm, fs = _FRAC_BITS, _FRAC_MASK, _FRAC_SCALE
        m32 = _M32
        j = 0
        for _ in range(self.block_pairs):
            if v1 is not None:  # fast path: pure sine
                p = (ph + v1[2]) & m32
                k = p >> fb
                a = tab[k]
                sv = v1[1] * (a + (p & fm) * fs * (tab[k + 1] - a))
            else:
                sv = 0.0
                for h, amp, off in vc:
                    p = (h * ph + off) & m32
                    k = p >> fb
                    a = tab[k]
                    sv += amp * (a + (p & fm) * fs * (tab[k + 1] - a))
            if i1 is not None:
                p = (ph + i1[2]) & m32
                k = p >> fb
                a = tab[k]
                si = i1[1] * (a + (p & fm) * fs * (tab[k + 1] - a))
            else:
                si = 0.0
                for h, amp, off in ic:
                    p = (h * ph + off) & m32
                    k = p >> fb
                    a = tab[k]
                    si += amp * (a + (p & fm) * fs * (tab[k + 1] - a))
            if noise:
                x ^= (x << 13) & m32
                x ^= x >> 17
                x ^= (x << 5) & m32
                sv += x * nscale
                x ^= (x << 13) & m32
                x ^= x >> 17
                x ^= (x << 5) & m32
                si += x * nscale
            c = int(math.floor(sv + dv))
            buf[j] = 0 if c < 0 else (top if c > top else c)
            c = int(math.floor(si + di))
            buf[j + 1] = 0 if c < 0 else (top if c > top else c)
            j += 2
            ph = (ph + inc) & m32
        self._phase, self._x = ph, x
        self.pairs_done += self.block_pairs

    # --- analytic truth (from the scenario, not from the samples) ---
    def truth(self):
        """Physical RMS, powers and frequency of the scenario: dict vrms, irms, p, q, s, pf, freq."""
        vr = math.sqrt(sum(r * r for _, r, _ in self._vcomp))
        ir = math.sqrt(sum(r * r for _, r, _ in self._icomp))
        p = q = 0.0
        for (hv, v, _), (hi, i, ph) in zip(self._vcomp, self._icomp):
            p += v * i * math.cos(math.radians(ph))
            q += v * i * math.sin(math.radians(ph))
        s = vr * ir
        return {"vrms": vr, "irms": ir, "p": p, "q": q, "s": s, "pf": p / s if s else 0.0,
                "freq": float(self.scenario["freq_hz"])}

    def truth_energy_j(self, n0, n1):
        """Exact integral of v(t)*i(t) (joules) from sample time n0 to n1 (t = n / rate_hz)."""
        w = _TWO_PI * float(self.scenario["freq_hz"])
        t0 = n0 / self.rate_hz
        t1 = n1 / self.rate_hz
        total = 0.0
        # v = sum A sin(a w t), i = sum B sin(b w t - phi); sin x sin y = (cos(x-y) - cos(x+y)) / 2
        for hv, vr, _ in self._vcomp:
            for hi, ir, ph in self._icomp:
                amp = vr * ir  # (sqrt2 V)(sqrt2 I) / 2
                phi = math.radians(ph)
                for sign, om, g in ((1.0, (hv - hi) * w, phi), (-1.0, (hv + hi) * w, -phi)):
                    if om == 0:
                        total += sign * amp * (t1 - t0) * math.cos(g)
                    else:
                        total += sign * amp * (math.sin(om * t1 + g) - math.sin(om * t0 + g)) / om
        return total

    def truth_reactive_j(self, n0, n1):
        """Reactive 'energy' (var*s) over the same span: Q times the duration."""
        return self.truth()["q"] * (n1 - n0) / self.rate_hz
