# The grid simulator on the MicroPython unix port: interface, buffers, determinism, waveform.
import math

from mptest import raises
from sim.grid import Grid


def test_interface_and_double_buffering():
    g = Grid({"block_pairs": 50, "adc_bits": 12})
    assert g.rate_hz == 4000 and g.adc_bits == 12 and g.block_pairs == 50 and g.skew_us == 0
    g.start()
    a = g.read_block()
    b = g.read_block()
    c = g.read_block()
    g.stop()
    assert len(a) == 100 and a is c and a is not b  # two preallocated buffers, alternating
    assert g.pairs_done == 150


def test_same_seed_same_stream_other_seed_other_noise():
    sc = {"noise_lsb": 2, "irms": 7.0, "harmonics": [[3, 2, 20]], "dc_lsb": [3, -2]}
    s1 = [list(Grid(sc, seed=5).read_block()) for _ in range(1)][0]
    s2 = list(Grid(sc, seed=5).read_block())
    s3 = list(Grid(sc, seed=6).read_block())
    assert s1 == s2 and s1 != s3
    assert max(abs(x - y) for x, y in zip(s1, s3)) <= 5  # only the noise differs (+-2 each)


def test_dc_noise_and_clamping():
    g = Grid({"vrms": 0.0, "irms": 0.0, "dc_lsb": [10, -20], "noise_lsb": 3, "block_pairs": 4000})
    buf = g.read_block()
    v = [buf[k] - 2048 for k in range(0, 8000, 2)]
    i = [buf[k] - 2048 for k in range(1, 8000, 2)]
    assert min(v) >= 7 and max(v) <= 13 and min(i) >= -23 and max(i) <= -17
    assert abs(sum(v) / 4000 - 10) < 0.1 and abs(sum(i) / 4000 + 20) < 0.1
    full = Grid({"vrms": 400.0, "irms": 100.0, "adc_bits": 16}).read_block()
    assert max(full) == 65535 and min(full) == 0


def test_waveform_matches_the_scenario():
    # 16-bit, no noise: whole cycles of samples reproduce the truth closely
    g = Grid({"adc_bits": 16, "irms": 20.0, "phase_deg": 40.0, "harmonics": [[5, 3, 10, 15]],
              "block_pairs": 400, "freq_hz": 50.0})
    buf = g.read_block()  # 400 samples = 5 cycles
    mid = 32768
    vs = [(buf[2 * k] - mid) * g.v_per_lsb for k in range(400)]
    cs = [(buf[2 * k + 1] - mid) * g.a_per_lsb for k in range(400)]
    t = g.truth()
    assert abs(math.sqrt(sum(x * x for x in vs) / 400) / t["vrms"] - 1) < 1e-4
    assert abs(math.sqrt(sum(x * x for x in cs) / 400) / t["irms"] - 1) < 1e-4
    p = sum(x * y for x, y in zip(vs, cs)) / 400
    assert abs(p / t["p"] - 1) < 2e-4
    assert abs(g.truth_energy_j(0, 400) - t["p"] * 0.1) < 1e-6 * t["p"]


def test_bad_scenarios_are_rejected():
    with raises(ValueError, match="unknown"):
        Grid({"vrsm": 230})
    with raises(ValueError, match="adc_bits"):
        Grid({"adc_bits": 20})
    with raises(ValueError, match="harmonic"):
        Grid({"harmonics": [[41, 0, 1]]})


def test_nonsense_is_refused_with_the_reason():
    """sim.grid.validate on the interpreter the virtual board runs (meterctl checks files with it too)."""
    cases = [({"vrms": -1.0}, "vrms must be >= 0"), ({"irms": "5"}, "irms must be a number"),
             ({"irms": True}, "irms must be a number"), ({"freq_hz": 0}, "freq_hz must be > 0"),
             ({"freq_hz": 2000}, "Nyquist"), ({"freq_hz": float("nan")}, "finite"),
             ({"vrms": float("inf")}, "finite"), ({"noise_lsb": -2}, "noise_lsb"),
             ({"harmonics": [[3, "1", 1]]}, "harmonic v_pct"), ({"harmonics": [[3, 1]]}, "harmonic"),
             ({"dc_lsb": [1, 2, 3]}, "dc_lsb"), ({"block_pairs": 0}, "block_pairs"),
             ({"seed": 1.5}, "whole number"), ({"phase_deg": 400}, "phase_deg")]
    for sc, reason in cases:
        with raises(ValueError, match=reason):
            Grid(sc)
    # the edges that make sense stay allowed: no voltage, no load, DC on one channel only, seed 0
    Grid({"vrms": 0, "irms": 0, "dc_lsb": [0, 5], "seed": 0, "freq_hz": 1999.9, "harmonics": []})
