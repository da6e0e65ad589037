"""The ATM90E32 simulator itself (CPython), plus the driver against it as a property test."""
import binascii
import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sim.atm90e32 import CRC_DIGEST, CRC_REGS, Atm90e32Sim, DeadBus, crc16_ccitt
from umeter.hal import atm90e32 as A


def raw_read(chip, addr, split=True):
    chip.cs.value(0)
    if split:
        chip.spi.write(bytes([0x80 | (addr >> 8), addr & 0xFF]))
        data = chip.spi.read(2, 0xFF)
    else:
        rx = bytearray(4)
        chip.spi.write_readinto(bytes([0x80 | (addr >> 8), addr & 0xFF, 0xFF, 0xFF]), rx)
        data = rx[2:]
    chip.cs.value(1)
    return (data[0] << 8) | data[1]


def raw_write(chip, addr, value):
    chip.cs(0)
    chip.spi.write(bytes([addr >> 8, addr & 0xFF, value >> 8, value & 0xFF]))
    chip.cs(1)


def test_crc_is_crc16_ccitt_false():
    rng = random.Random(7)
    for _ in range(50):
        words = [rng.randrange(65536) for _ in range(rng.randrange(1, 40))]
        data = b"".join(bytes([w >> 8, w & 0xFF]) for w in words)
        assert crc16_ccitt(words) == binascii.crc_hqx(data, 0xFFFF)


def test_frame_may_be_split_any_way_and_echoes_into_last_spi_data():
    chip = Atm90e32Sim()
    assert raw_read(chip, 0x31) == 0x0861
    assert raw_read(chip, 0x32, split=False) == 0xC468
    assert raw_read(chip, 0x78) == 0xC468          # LastSPIData = previous read
    raw_write(chip, 0x7F, 0x55AA)
    assert raw_read(chip, 0x78) == 0x55AA          # ... or previous write


def test_bytes_without_chip_select_are_ignored():
    chip = Atm90e32Sim()
    assert chip.spi.read(4, 0xFF) == b"\xff\xff\xff\xff"
    chip.spi.write(b"\x7f\x55\xaa\x00")
    assert chip.frames == 0 and not chip.unlocked


def test_configuration_gate_and_digest():
    chip = Atm90e32Sim()
    d0 = chip.peek(CRC_DIGEST)
    raw_write(chip, 0x61, 0x1234)
    assert chip.peek(0x61) == 0                    # gate closed: ignored
    raw_write(chip, 0x7F, 0x55AA)
    raw_write(chip, 0x61, 0x1234)
    assert chip.peek(0x61) == 0x1234
    raw_write(chip, 0x7F, 0)
    assert chip.peek(CRC_DIGEST) == chip.crc() != d0
    assert raw_read(chip, 0x79) == 0
    chip.corrupt_register(CRC_REGS[5])
    assert raw_read(chip, 0x79) != 0


def test_soft_reset_needs_its_key():
    chip = Atm90e32Sim()
    raw_write(chip, 0x7F, 0x55AA)
    raw_write(chip, 0x00, 1)
    raw_write(chip, 0x70, 0x1111)
    assert chip.peek(0x00) == 1
    raw_write(chip, 0x70, 0x789A)
    assert chip.peek(0x00) == 0 and not chip.unlocked


def test_energy_registers_clear_on_read_wrap_and_carry_fractions():
    chip = Atm90e32Sim(phases=1)
    raw_write(chip, 0x7F, 0x55AA)
    for addr, v in ((0x00, 1), (0x61, 0x8000), (0x62, 0x8000)):
        raw_write(chip, addr, v)
    raw_write(chip, 0x7F, 0)
    chip.set_grid(0, vrms=230.0, irms=10.0)         # 2300 W: 736,000 counts per hour at MC 3200
    total = 0
    for _ in range(3600):
        chip.advance(1.0)
        total += raw_read(chip, 0x81)
    assert abs(total - 2300 * 320) <= 1
    assert raw_read(chip, 0x81) == 0                # cleared by the read
    chip.advance(3600.0)                            # unread for an hour: the 16-bit register wraps
    assert abs(raw_read(chip, 0x81) - 736000 % 65536) <= 1


def test_dead_bus_reads_fill():
    for fill in (0xFF, 0x00):
        bus = DeadBus(fill)
        bus.cs(0)
        assert bus.spi.read(3) == bytes([fill]) * 3
        bus.cs(1)


@settings(max_examples=40, deadline=None)
@given(vrms=st.floats(90.0, 300.0), irms=st.floats(0.0, 60.0), deg=st.floats(-180.0, 180.0),
       freq=st.floats(45.0, 65.0), ugain=st.integers(0x4000, 0xF000), igain=st.integers(0x4000, 0xF000))
def test_driver_reads_truth_within_lsb(vrms, irms, deg, freq, ugain, igain):
    chip = Atm90e32Sim(phases=1, ugain_true=ugain, igain_true=igain)
    chip.set_grid(0, vrms=vrms, irms=irms, phase_deg=deg, freq_hz=freq)
    drv = A.Atm90e32(chip.spi, chip.cs, calibration={0: {"ugain": ugain, "igain": igain}},
                     sleep_ms=lambda ms: None)
    drv.configure()
    r = drv.reading()
    a = math.radians(deg)
    assert r["vrms"] == pytest.approx(vrms, abs=A.URMS_LSB_V / 256)
    assert r["irms"] == pytest.approx(irms, abs=A.IRMS_LSB_A / 256)
    assert r["p_w"] == pytest.approx(vrms * irms * math.cos(a), abs=A.POWER_LSB)
    assert r["q_var"] == pytest.approx(vrms * irms * math.sin(a), abs=A.POWER_LSB)
    assert r["freq_hz"] == pytest.approx(freq, abs=A.FREQ_LSB_HZ)
    if irms > 0.01:
        assert r["pf"] == pytest.approx(math.cos(a), abs=A.PF_LSB)
