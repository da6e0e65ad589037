# ATM90E32 driver against the register-level simulator, on the MicroPython unix port.
from mptest import raises
from sim.atm90e32 import CRC_DIGEST, Atm90e32Sim, DeadBus
from umeter.hal import atm90e32 as A

FINE_V = A.URMS_LSB_V / 256
FINE_I = A.IRMS_LSB_A / 256


def _nosleep(ms):
    pass


def _rig(phases=(0,), ugain_true=0x8000, igain_true=0x8000, **kw):
    chip = Atm90e32Sim(phases=3, ugain_true=ugain_true, igain_true=igain_true)
    cal = {}
    for p in phases:
        cal[p] = {"ugain": ugain_true, "igain": igain_true}
    drv = A.Atm90e32(chip.spi, chip.cs, phases=phases, calibration=cal, sleep_ms=_nosleep, **kw)
    return chip, drv


def _truth(vrms, irms, deg):
    import math
    a = math.radians(deg)
    return vrms * irms * math.cos(a), vrms * irms * math.sin(a), vrms * irms


def test_readings_within_one_register_lsb_of_truth_three_phases():
    chip, drv = _rig(phases=(0, 1, 2), ugain_true=0x9A31, igain_true=0x6F05)
    grid = [(231.37, 7.123, 30.0), (218.9, 0.517, -60.0), (240.04, 43.21, 170.0)]
    for p in range(3):
        chip.set_grid(p, vrms=grid[p][0], irms=grid[p][1], phase_deg=grid[p][2], freq_hz=49.97)
    drv.configure()
    rs = drv.readings()
    assert [r["phase"] for r in rs] == [0, 1, 2]
    for p in range(3):
        v, i, deg = grid[p]
        r = rs[p]
        pw, qv, sva = _truth(v, i, deg)
        assert abs(r["vrms"] - v) <= FINE_V, (p, r["vrms"], v)
        assert abs(r["irms"] - i) <= FINE_I, (p, r["irms"], i)
        assert abs(r["p_w"] - pw) <= A.POWER_LSB, (p, r["p_w"], pw)
        assert abs(r["q_var"] - qv) <= A.POWER_LSB, (p, r["q_var"], qv)
        assert abs(r["s_va"] - sva) <= A.POWER_LSB, (p, r["s_va"], sva)
        assert abs(r["pf"] - pw / sva) <= A.PF_LSB
        assert abs(r["freq_hz"] - 49.97) <= A.FREQ_LSB_HZ
    assert rs[2]["p_w"] < 0 and rs[1]["q_var"] < 0 and rs[0]["q_var"] > 0


def test_reading_keys_and_energy_types():
    chip, drv = _rig()
    chip.set_grid(0, vrms=230.0, irms=1.0)
    drv.configure()
    r = drv.reading()
    for key in ("vrms", "irms", "p_w", "q_var", "s_va", "pf", "freq_hz", "phase") + A.ENERGY_KEYS:
        assert key in r, key
    for key in A.ENERGY_KEYS:
        assert isinstance(r[key], int)


def test_engine_status_uses_the_engines_obis_keys():
    from umeter.metering import obis
    chip, drv = _rig(phases=(0, 1))
    chip.set_grid(0, vrms=230.0, irms=10.0, phase_deg=0.0)
    chip.set_grid(1, vrms=231.0, irms=4.0, phase_deg=120.0)      # exporting, Q > 0
    drv.configure()
    for _ in range(20):
        chip.advance(10.0)
        r0, r1 = drv.readings()
    s0, s1 = A.engine_status(r0), A.engine_status(r1)
    assert s0[obis.VOLTAGE] == r0["vrms"] and s0[obis.CURRENT] == r0["irms"]
    assert s1["52.7.0"] == r1["vrms"] and s1["51.7.0"] == r1["irms"]
    assert s0[obis.P_IMPORT] == r0["p_w"] > 0 and s0[obis.P_EXPORT] == 0.0
    assert s1[obis.P_EXPORT] == -r1["p_w"] > 0 and s1[obis.P_IMPORT] == 0.0
    assert s1[obis.Q_IMPORT] == r1["q_var"] > 0 and s1[obis.Q_EXPORT] == 0.0
    assert s0[obis.A_IMPORT] == r0["ea_imp_mwh"] > 0 and s1[obis.A_EXPORT] == r1["ea_exp_mwh"] > 0
    assert s1[obis.R_IMPORT] == r1["er_imp_mvarh"] and s0[obis.R_EXPORT] == 0
    for code in obis.REGISTERS:
        assert isinstance(s0[code], int)
    assert s0[obis.FREQUENCY] == r0["freq_hz"] and s0[obis.POWER_FACTOR] == r0["pf"]


def test_energy_counters_exact_with_regular_reads():
    chip, drv = _rig(phases=(0, 1))
    chip.set_grid(0, vrms=230.0, irms=10.0, phase_deg=36.87)     # import, inductive
    chip.set_grid(1, vrms=230.0, irms=4.0, phase_deg=180.0 - 25.0)  # export
    drv.configure()
    steps, dt = 360, 10.0                                       # one hour, read every 10 s
    for _ in range(steps):
        chip.advance(dt)
        drv.readings()
    r0, r1 = drv.readings()
    hours = steps * dt / 3600
    count_mwh = 10000 / drv.mc                                  # one register count
    p0, q0, s0 = _truth(230.0, 10.0, 36.87)
    p1, q1, s1 = _truth(230.0, 4.0, 155.0)
    for got, want in ((r0["ea_imp_mwh"], p0), (r0["er_imp_mvarh"], q0), (r0["es_mvah"], s0),
                      (r1["ea_exp_mwh"], -p1), (r1["er_imp_mvarh"], q1), (r1["es_mvah"], s1)):
        want_mwh = want * hours * 1000
        assert abs(got - want_mwh) <= 2 * count_mwh, (got, want_mwh)
    assert r0["ea_exp_mwh"] == 0 and r0["er_exp_mvarh"] == 0 and r1["ea_imp_mwh"] == 0
    # the driver keeps exact counts; mWh is their floor conversion
    assert r0["ea_imp_mwh"] == drv.energy_counts(0)[0] * 10000 // drv.mc


def test_configure_sequence_and_registers():
    chip, drv = _rig(line_hz=60, mc=6400, pga=0x0015)
    drv.configure()
    addrs = [a for a, _ in chip.writes]
    assert chip.writes[0] == (0x70, 0x789A)                    # soft reset first
    assert chip.writes[1] == (0x7F, 0x55AA)                    # then open the configuration gate
    assert chip.writes[-1] == (0x7F, 0x0000)                   # and close it last
    assert addrs.index(0x61) < len(addrs) - 1
    pl = A.plconst_for(6400)
    assert pl == 70312500
    assert (chip.peek(0x31) << 16) | chip.peek(0x32) == pl
    assert chip.peek(0x00) == 1
    assert chip.peek(0x33) & A.MMODE0_60HZ
    assert chip.peek(0x34) == 0x0015
    assert drv.digest == chip.peek(CRC_DIGEST) == chip.crc()
    drv.check()


def test_calibration_writes_land_in_the_right_registers_with_correct_checksum():
    chip, drv = _rig(phases=(0, 1, 2))
    chip.set_grid(1, vrms=230.0, irms=5.0)
    drv.configure()
    before = drv.digest
    cal = {"ugain": 0x8123, "igain": 0x7E01, "uoffset": -5, "ioffset": 7, "pqgain": -100, "phi": 12,
           "poffset": 3, "qoffset": -4}
    drv.set_calibration(1, **cal)
    expect = {0x65: 0x8123, 0x66: 0x7E01, 0x67: 0xFFFB, 0x68: 7,     # UgainB IgainB UoffsetB IoffsetB
              0x49: 0xFF9C, 0x4A: 12, 0x43: 3, 0x44: 0xFFFC}          # PQGainB PhiB PoffsetB QoffsetB
    for addr in expect:
        assert chip.peek(addr) == expect[addr], (hex(addr), chip.peek(addr))
    # phases A and C untouched
    assert chip.peek(0x61) == 0x8000 and chip.peek(0x69) == 0x8000 and chip.peek(0x47) == 0
    assert drv.calibration(1) == cal
    assert drv.digest != before
    assert drv.digest == chip.peek(CRC_DIGEST) == chip.crc()
    drv.check()
    r = drv.reading(1)
    assert abs(r["vrms"] - 230.0 * 0x8123 / 0x8000 + 5 * FINE_V) <= FINE_V


def test_gain_offset_phase_helpers():
    chip, drv = _rig(phases=(0,))
    drv.configure()
    drv.set_voltage_gain(0, 0x8800)
    drv.set_current_gain(0, 0x7700)
    drv.set_offsets(0, voltage=-2, current=3)
    drv.set_phase(0, -7)
    assert (chip.peek(0x61), chip.peek(0x62), chip.peek(0x63), chip.peek(0x64), chip.peek(0x48)) == \
        (0x8800, 0x7700, 0xFFFE, 3, 0xFFF9)
    drv.check()


def test_calibrate_against_reference():
    chip = Atm90e32Sim(phases=1, ugain_true=0x9000, igain_true=0x7000)
    chip.set_grid(0, vrms=230.0, irms=5.0)
    drv = A.Atm90e32(chip.spi, chip.cs, sleep_ms=_nosleep)   # default gains 0x8000: reads wrong
    drv.configure()
    assert abs(drv.reading()["vrms"] - 230.0 * 0x8000 / 0x9000) < 0.01
    g = drv.calibrate_voltage(0, 230.0)
    h = drv.calibrate_current(0, 5.0)
    assert abs(g - 0x9000) <= 1 and abs(h - 0x7000) <= 1
    r = drv.reading()
    assert abs(r["vrms"] - 230.0) < 0.01 and abs(r["irms"] - 5.0) < 0.001
    with raises(ValueError):
        drv.calibrate_voltage(0, 0)


def test_corrupted_configuration_gives_checksum_error():
    chip, drv = _rig(phases=(0,))
    chip.set_grid(0, vrms=230.0, irms=1.0)
    drv.configure()
    drv.reading()
    chip.corrupt_register(0x62, 0x0400)          # an upset in IgainA inside the chip
    with raises(A.ChecksumError, match="CRCErrStatus"):
        drv.reading()
    with raises(A.ChecksumError):
        drv.readings()


def test_chip_reset_behind_our_back_gives_checksum_error():
    chip, drv = _rig()
    drv.configure()
    chip.reset()                                   # brown-out: defaults, self-consistent new digest
    with raises(A.ChecksumError, match="CRCDigest changed"):
        drv.reading()


def test_checksum_error_is_a_module_error():
    assert issubclass(A.ChecksumError, A.Atm90e32Error)
    assert issubclass(A.ChipAbsentError, A.Atm90e32Error)


def test_single_read_glitch_is_caught_and_corrected():
    chip, drv = _rig()
    chip.set_grid(0, vrms=230.0, irms=2.0)
    drv.configure()
    chip.glitch_reads(1, xor=0x0200)
    assert drv.read_register(0xD9) == 23000
    assert drv.spi_retries == 1


def test_intermittent_read_errors_raise():
    chip, drv = _rig()
    chip.set_grid(0, vrms=230.0, irms=2.0)
    drv.configure()
    chip.glitch_reads(1000, xor=0x0200, period=2)   # value bad, echo good, second echo bad
    with raises(A.ChecksumError, match="not confirmed"):
        drv.reading()


def test_stuck_miso_bit_raises():
    chip, drv = _rig()
    chip.set_grid(0, vrms=230.0, irms=2.0)
    drv.configure()
    chip.glitch_reads(1000, xor=0x0200)             # every response has the bit flipped
    with raises(A.ChecksumError):
        drv.reading()


def test_chip_absent_all_ones_and_all_zeros():
    for fill in (0xFF, 0x00):
        bus = DeadBus(fill)
        drv = A.Atm90e32(bus.spi, bus.cs, sleep_ms=_nosleep)
        with raises(A.ChipAbsentError, match="does not answer"):
            drv.configure()


def test_chip_disappears_after_configure():
    chip, drv = _rig()
    drv.configure()
    bus = DeadBus(0xFF)
    drv._spi = bus.spi                            # the chip select line broke
    with raises(A.Atm90e32Error):
        drv.reading()


def test_write_outside_the_gate_is_detected():
    chip, drv = _rig()
    drv.configure()
    with raises(A.ChecksumError, match="reads back"):
        drv.write_register(0x61, 0x1234, verify=True)
    assert chip.peek(0x61) == 0x8000
    drv.check()                                    # nothing changed in the chip


def test_reading_before_configure_is_an_error():
    chip, drv = _rig()
    with raises(A.Atm90e32Error, match="configure"):
        drv.reading()


def test_wire_format_mode_and_frames():
    chip, drv = _rig()
    drv.configure()
    log = []
    inner = chip._exchange

    def spy(b):
        log.append((chip.cs.value(), b))
        return inner(b)

    chip.spi._exchange = spy
    drv.read_register(0xDD)
    # read frame: CS low, 0x80|addr_hi, addr_lo, then clocks out 0xFF twice; then the LastSPIData frame
    assert log[:4] == [(0, 0x80), (0, 0xDD), (0, 0xFF), (0, 0xFF)]
    assert log[4:6] == [(0, 0x80), (0, 0x78)]
    del log[:]
    drv.set_calibration(0, phi=0x0102)
    w = [b for _, b in log]
    i = w.index(0x48)
    assert w[i - 1] == 0x00 and w[i + 1] == 0x01 and w[i + 2] == 0x02
    assert (A.SPI_POLARITY, A.SPI_PHASE) == (1, 1)


def test_argument_checks():
    chip = Atm90e32Sim()
    for kw in ({"phases": (3,)}, {"line_hz": 55}, {"mc": 0}):
        with raises(ValueError):
            A.Atm90e32(chip.spi, chip.cs, sleep_ms=_nosleep, **kw)
    drv = A.Atm90e32(chip.spi, chip.cs, sleep_ms=_nosleep, calibration={0: {"uoffset": 40000}})
    with raises(ValueError, match="out of range"):
        drv.configure()
    drv = A.Atm90e32(chip.spi, chip.cs, sleep_ms=_nosleep)
    drv.configure()
    with raises(ValueError, match="unknown"):
        drv.set_calibration(0, volts=1)
    with raises(ValueError, match="not wired"):
        drv.reading(2)


class _FixedReading:
    """A driver stand-in returning one reading dict whose energy grows by fixed mWh per poll: the
    IcEngine's own cost per poll, without the bus simulator's."""

    def __init__(self, step_mwh):
        self.r = {"phase": 0, "vrms": 230.0, "irms": 10.0, "p_w": 2300.0, "q_var": 10.0, "s_va": 2300.1,
                  "pf": 0.999, "freq_hz": 50.0, "ea_imp_mwh": 0, "ea_exp_mwh": 0, "er_imp_mvarh": 0,
                  "er_exp_mvarh": 0, "es_mvah": 0}
        self.step = step_mwh

    def reading(self, phase=None):
        self.r["ea_imp_mwh"] += self.step
        self.r["er_imp_mvarh"] += 1
        return self.r


def test_ic_engine_registers_keep_remainders_past_2_48_mwh():
    from umeter import records
    from umeter.metering import obis
    from umeter.metering.ic_engine import IcEngine
    chip, drv = _rig()
    chip.set_grid(0, vrms=230.0, irms=10.0, phase_deg=30.0)
    drv.configure()
    eng = IcEngine(drv, phase=0, profile_min=1)
    big = [(((1 << 48) + 5) << 24) + 12345, (1 << 40) << 24, 7, (1 << 24) - 1]
    eng.restore([1, 24, 10 ** 9] + big)
    for _ in range(65):
        chip.advance(1.0)
        eng.feed(True)
    r = drv.reading()
    # base (sub-mWh remainder kept) + the chip's whole mWh since the restore
    assert eng.register_fu(obis.A_IMPORT) == big[0] + (r["ea_imp_mwh"] << 24)
    assert eng.registers()[obis.A_IMPORT] == (1 << 48) + 5 + r["ea_imp_mwh"] > (1 << 48) + 5
    assert eng.register_fu(obis.R_EXPORT) == big[3] and eng.register_fu(obis.A_EXPORT) == big[1]
    # checkpoint record and back, into a rebooted engine: exact, remainders included
    snap = records.decode(records.checkpoint(eng.snapshot()))[1]["snapshot"]
    again = IcEngine(drv, phase=0)
    again.restore(snap)
    assert [again.register_fu(c) for c in obis.REGISTERS] == [eng.register_fu(c) for c in obis.REGISTERS]
    assert again.t == 10 ** 9 + 65 and again.end_window() is False
    assert eng.pop_record() is not None  # a profile interval ended on the way
    with raises(ValueError, match="non-negative"):
        again.restore([1, 24, 0, -1, 0, 0, 0])


def test_ic_engine_poll_allocation_is_bounded():
    import gc
    import sys

    from umeter.metering.ic_engine import IcEngine
    eng = IcEngine(_FixedReading(641), phase=0, profile_min=1)
    eng.restore([1, 24, 0, (1 << 62) + 3, 0, 0, 0])  # registers far beyond small ints
    worst = 0
    for _ in range(130):  # two profile intervals
        gc.collect()
        gc.disable()
        before = gc.mem_alloc()
        eng.feed(True)
        worst = max(worst, gc.mem_alloc() - before)
        gc.enable()
    bound = 3072 if sys.maxsize > 1 << 32 else 2048
    print("IcEngine.feed() allocates at most %d B per poll (bound %d)" % (worst, bound))
    assert 0 < worst <= bound
