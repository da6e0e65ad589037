# Range guards on the unix port, both lanes (the 32-bit one is the target's word size): a code beyond
# the configured ADC width is clipped and counted, never wrapped in a 32-bit viper accumulator; an
# input at or beyond the ADC's range is flagged as saturation in the status and the profile record,
# and does not make up reactive power.
from array import array

from sim.grid import Grid
from umeter.metering import obis
from umeter.metering.engine import FLAG_INPUT_SATURATED, Engine, decode_profile

HEAPSIZE = "4M"


def second_of_blocks(scenario):
    """1 s of 400-pair blocks (5 whole cycles each at 50 Hz): fed in a loop, a continuous waveform."""
    sc = {"block_pairs": 400, "noise_lsb": 2, "skew_us": 125}
    sc.update(scenario)
    g = Grid(sc)
    return [array("H", g.read_block()) for _ in range(g.rate_hz // g.block_pairs)]


def widened(blocks, factor, top):
    """Codes `factor` times farther from mid-scale 2048, clamped to 0..top."""
    out = []
    for b in blocks:
        w = array("H", b)
        for k in range(len(w)):
            c = 2048 + (w[k] - 2048) * factor
            w[k] = 0 if c < 0 else (top if c > top else c)
        out.append(w)
    return out


def meter(blocks, seconds, **kw):
    eng = Engine(4000, 12, 400, skew_us=125, **kw)
    for k in range(seconds * 10):
        eng.feed(blocks[k % len(blocks)])
    return eng


def test_16_bit_codes_into_a_12_bit_engine_are_clipped_and_flagged():
    base = second_of_blocks({"irms": 10.0, "phase_deg": 36.87})
    wide = widened(base, 16, 65535)  # what a 16-bit ADC gives an engine configured for 12 bits
    clipped = widened(base, 16, 4095)  # the same, clipped to 12 bits before the engine
    a = meter(wide, 62, profile_min=1, demand_s=15)
    b = meter(clipped, 62, profile_min=1, demand_s=15)
    # the kernel's clipping is exactly clipping at the input: nothing wrapped anywhere
    assert [a.register_fu(c) for c in obis.REGISTERS] == [b.register_fu(c) for c in obis.REGISTERS]
    assert a.status["p"] == b.status["p"] and a.status[obis.VOLTAGE] == b.status[obis.VOLTAGE]
    assert a.status["clipped"] > 0 and b.status["clipped"] == 0 and a.clipped_codes > 1000
    assert a.status["saturated"] and a.status["sat_v"] == b.status["sat_v"] > 0
    assert a.saturated_windows == a.windows
    # a clipped square-ish wave: power bounded by the full scale (400 V x 100 A peak), positive
    assert 0 < a.status["p"] <= 400 * 100
    rec = decode_profile(a.pop_record())
    assert rec["flags"] & FLAG_INPUT_SATURATED and rec["sat_samples"] > 0
    assert rec == decode_profile(b.pop_record())
    print("16-bit codes: %d clipped, P %.0f W as if clipped at the input" % (a.clipped_codes, a.status["p"]))


def test_input_beyond_the_adc_range_is_flagged_and_makes_up_no_reactive_power():
    # current only beyond range (150 A rms, full scale 70.7 A), resistive: no reactive power appears
    r = meter(second_of_blocks({"irms": 150.0}), 12)
    s = r.status
    assert s["saturated"] and s["sat_i"] > 0 and s["sat_v"] == 0 and s["q_valid"]
    assert abs(s["q"]) < 0.001 * s["p"], (s["p"], s["q"])
    # ...and an inductive one keeps its (clipped) reactive power
    ind = meter(second_of_blocks({"irms": 150.0, "phase_deg": 36.87}), 12).status
    assert ind["q_valid"] and 0.7 < ind["q"] / ind["p"] < 0.8
    # both channels beyond range, resistive: the quadrature sum would show reactive power that is not
    # there (harmonics of both clipped channels); none is reported or booked, the window is flagged
    both = meter(second_of_blocks({"irms": 300.0, "vrms": 600.0}), 12, profile_min=1)
    s = both.status
    assert s["saturated"] and s["sat_v"] > 0 and s["sat_i"] > 0 and not s["q_valid"]
    assert s["q"] == 0.0 and s[obis.Q_IMPORT] == 0.0 and s[obis.Q_EXPORT] == 0.0
    assert both.register_fu(obis.R_IMPORT) == 0 and both.register_fu(obis.R_EXPORT) == 0
    assert both.register_fu(obis.A_IMPORT) > 0 and both.saturated_windows == both.windows
    # a nominal input is not flagged
    ok = meter(second_of_blocks({"irms": 10.0}), 3).status
    assert not ok["saturated"] and ok["sat_v"] == ok["sat_i"] == ok["clipped"] == 0 and ok["q_valid"]
