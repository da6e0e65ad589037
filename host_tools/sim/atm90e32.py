"""Register-level simulator of the ATM90E32 metering IC behind a machine.SPI-like bus and a CS pin.

Runs under CPython and MicroPython (common subset only). Usage:

    from sim.atm90e32 import Atm90e32Sim, DeadBus
    chip = Atm90e32Sim(phases=3)
    chip.set_grid(0, vrms=230.0, irms=5.0, phase_deg=30.0, freq_hz=50.0)
    drv = Atm90e32(chip.spi, chip.cs, ...)       # the real driver, unchanged
    chip.advance(10.0)                            # 10 s of metering into the energy registers

What it models, like the chip: the SPI frame (CS low; 16-bit address word, bit 15 = read; 16-bit data;
MSB first; any split of the frame into write/read/readinto/write_readinto calls), LastSPIData, soft reset,
MeterEn, the CfgRegAccEn write gate (configuration and calibration registers only change while it
holds 0x55AA), the configuration CRC (computed into CRCDigest when the gate closes, re-checked on every
CRCErrStatus read), read-to-clear 16-bit energy registers, and the result registers with the driver's
LSB scalings (Urms/UrmsLSB, Irms/IrmsLSB, 32-bit P/Q/S at 0.00032, PF 0.001, Freq 0.01 Hz).

Assumptions of the model, not claims about the silicon (the driver depends on none of them):
- CRC: CRC-16/CCITT (poly 0x1021, init 0xFFFF) over the big-endian words of CRC_REGS in address order.
  The driver never recomputes it; it latches CRCDigest after locking and compares.
- Measurement: V = vrms * Ugain / ugain_true + Uoffset (signed, in 1/256 of 0.01 V); I likewise with
  Igain/igain_true and Ioffset (1/256 of 0.001 A); P = V I cos(phi) (1 + PQGain/32768), Q with sin(phi),
  S = V I, PF = P / S. PhiX, PoffsetX, QoffsetX are stored and CRC-covered but not modelled.
- Register reset values are 0 except PLconst (0x0861C468, MC = 3200) and MMode0 (0x0087).

Fault injection: corrupt_register() (a bit flip inside the chip -> CRCErrStatus), reset() (a brown-out:
defaults and a new digest), glitch_reads() (MISO bit errors on read responses, LastSPIData stays right),
and DeadBus for a chip that does not answer (MISO stuck at 0xFF or 0x00).
"""
from sim.pin import PinSim
import math

SOFT_RESET = 0x70
LAST_SPI_DATA = 0x78
CRC_ERR_STATUS = 0x79
CRC_DIGEST = 0x7A
CFG_REG_ACC_EN = 0x7F
METER_EN = 0x00
PLCONST_H = 0x31
PLCONST_L = 0x32
MMODE0 = 0x33

UNLOCK_KEY = 0x55AA
RESET_KEY = 0x789A
PL_CONSTANT_NUM = 450000000000
POWER_LSB = 0.00032


def _ranges(*spans):
    out = []
    for a, b in spans:
        out.extend(range(a, b + 1))
    return tuple(out)


# Configuration + calibration registers (gated by CfgRegAccEn, covered by the CRC)
CRC_REGS = _ranges((0x00, 0x02), (0x05, 0x0F), (0x10, 0x1C), (0x20, 0x2F), (0x31, 0x3A), (0x41, 0x4C),
                   (0x51, 0x56), (0x61, 0x6C))
_GATED = set(CRC_REGS)
# Read-to-clear energy registers (T, A, B, C for AP, AN, RP, RN, S)
ENERGY_REGS = tuple(range(0x80, 0x94))


def crc16_ccitt(words):
    """CRC-16/CCITT-FALSE over 16-bit words sent big-endian."""
    crc = 0xFFFF
    for w in words:
        for byte in ((w >> 8) & 0xFF, w & 0xFF):
            crc ^= byte << 8
            for _ in range(8):
                crc = ((crc << 1) ^ 0x1021) & 0xFFFF if crc & 0x8000 else (crc << 1) & 0xFFFF
    return crc


def _s16(v):
    return v - 0x10000 if v & 0x8000 else v


class SpiSim:
    """machine.SPI-like bus with one device: write, read, readinto, write_readinto, init, deinit."""

    def __init__(self, exchange):
        self._exchange = exchange      # byte in -> byte out
        self.baudrate = 200000
        self.polarity = 1
        self.phase = 1
        self.bytes = 0

    def init(self, baudrate=None, polarity=None, phase=None, **kw):
        if baudrate is not None:
            self.baudrate = baudrate
        if polarity is not None:
            self.polarity = polarity
        if phase is not None:
            self.phase = phase

    def deinit(self):
        pass

    def write(self, buf):
        for b in buf:
            self._exchange(b)
        self.bytes += len(buf)

    def read(self, n, write=0x00):
        out = bytearray(n)
        self.readinto(out, write)
        return bytes(out)

    def readinto(self, buf, write=0x00):
        for i in range(len(buf)):
            buf[i] = self._exchange(write)
        self.bytes += len(buf)

    def write_readinto(self, wbuf, rbuf):
        if len(wbuf) != len(rbuf):
            raise ValueError("buffers must have the same length")
        for i in range(len(wbuf)):
            rbuf[i] = self._exchange(wbuf[i])
        self.bytes += len(wbuf)


class DeadBus:
    """A bus with no chip behind it: MISO stuck at `fill` (0xFF pulled up, 0x00 pulled down)."""

    def __init__(self, fill=0xFF):
        self.fill = fill
        self.spi = SpiSim(lambda b: self.fill)
        self.cs = PinSim(1)


class _Phase:
    def __init__(self):
        self.vrms = 0.0
        self.irms = 0.0
        self.phase_deg = 0.0
        self.energy_frac = [0.0, 0.0, 0.0, 0.0, 0.0]   # AP, AN, RP, RN, S in counts


class Atm90e32Sim:
    """The chip. `ugain_true`/`igain_true`: the gain register values for which the chip reads the truth
    (the analog front end of this virtual board)."""

    def __init__(self, phases=3, ugain_true=0x8000, igain_true=0x8000, freq_hz=50.0):
        self.ugain_true = ugain_true
        self.igain_true = igain_true
        self.freq_hz = freq_hz
        self.grid = [_Phase() for _ in range(3)]
        self.nphases = phases
        self.cs = PinSim(1, self._cs_changed)
        self.spi = SpiSim(self._exchange)
        self.frames = 0
        self.writes = []            # (addr, value) of every completed write frame, for tests
        self.glitch_reads(0)
        self.reset()

    # ---- grid state ------------------------------------------------------------------------------
    def set_grid(self, phase=0, vrms=None, irms=None, phase_deg=None, freq_hz=None):
        g = self.grid[phase]
        if vrms is not None:
            g.vrms = float(vrms)
        if irms is not None:
            g.irms = float(irms)
        if phase_deg is not None:
            g.phase_deg = float(phase_deg)
        if freq_hz is not None:
            self.freq_hz = float(freq_hz)

    # ---- chip state --------------------------------------------------------------------------------
    def reset(self):
        self.regs = [0] * 0x400
        self.regs[PLCONST_H] = 0x0861
        self.regs[PLCONST_L] = 0xC468
        self.regs[MMODE0] = 0x0087
        self.last = 0
        self.regs[CRC_DIGEST] = self.crc()
        self.unlocked = False
        self._pos = -1

    def crc(self):
        return crc16_ccitt([self.regs[a] for a in CRC_REGS])

    def mc(self):
        pl = (self.regs[PLCONST_H] << 16) | self.regs[PLCONST_L]
        return PL_CONSTANT_NUM / pl if pl else 0.0

    def peek(self, addr):
        """A register as stored (no side effects)."""
        return self.regs[addr]

    # ---- fault injection --------------------------------------------------------------------------
    def corrupt_register(self, addr, xor=0x0001):
        """Flip bits of a stored register behind the gate (an upset inside the chip)."""
        self.regs[addr] ^= xor

    def glitch_reads(self, n=1, xor=0x0010, period=1):
        """Corrupt the data word of every `period`-th read response on the wire, `n` times in all
        (the chip's LastSPIData keeps the true value)."""
        self._glitches = n
        self._glitch_xor = xor
        self._glitch_period = period
        self._glitch_phase = 0

    # ---- measurement model -----------------------------------------------------------------------
    def _measure(self, p):
        """(V, I, P, Q, S) the chip computes for phase p from the grid state and its registers."""
        if p >= self.nphases or not self.regs[METER_EN]:
            return 0.0, 0.0, 0.0, 0.0, 0.0
        g = self.grid[p]
        r = self.regs
        v = g.vrms * r[0x61 + 4 * p] / self.ugain_true + _s16(r[0x63 + 4 * p]) * (0.01 / 256)
        i = g.irms * r[0x62 + 4 * p] / self.igain_true + _s16(r[0x64 + 4 * p]) * (0.001 / 256)
        v = max(v, 0.0)
        i = max(i, 0.0)
        k = 1.0 + _s16(r[0x47 + 2 * p]) / 32768.0
        a = math.radians(g.phase_deg)
        s = v * i
        return v, i, s * math.cos(a) * k, s * math.sin(a) * k, s

    def advance(self, seconds):
        """Let `seconds` of metering run: accumulate energy into the read-to-clear registers
        (16-bit, wrapping; fractions of a count carried)."""
        mc = self.mc()
        if mc <= 0:
            return
        wh_per_count = 10.0 / mc
        for p in range(self.nphases):
            _, _, pw, qv, sva = self._measure(p)
            g = self.grid[p]
            amounts = (max(pw, 0.0), max(-pw, 0.0), max(qv, 0.0), max(-qv, 0.0), sva)
            for k in range(5):
                g.energy_frac[k] += amounts[k] * seconds / 3600.0 / wh_per_count
                whole = int(g.energy_frac[k])
                g.energy_frac[k] -= whole
                for reg in (0x80 + 4 * k + 1 + p, 0x80 + 4 * k):      # phase register and total
                    self.regs[reg] = (self.regs[reg] + whole) & 0xFFFF

    def _result(self, addr):
        """Value of a result register, computed now."""
        if addr == 0xF8:
            ok = self.regs[METER_EN] and any(self.grid[p].vrms > 0 for p in range(self.nphases))
            return int(self.freq_hz / 0.01 + 0.5) & 0xFFFF if ok else 0
        for base, kind in ((0xD9, "u"), (0xDD, "i"), (0xE9, "ul"), (0xED, "il")):
            if base <= addr < base + 3:
                v, i, _, _, _ = self._measure(addr - base)
                x = v / (0.01 / 256) if kind[0] == "u" else i / (0.001 / 256)
                n = min(int(x + 0.5), 0xFFFFFF)
                return n >> 8 if len(kind) == 1 else (n & 0xFF) << 8
        for hi, lo, idx in ((0xB1, 0xC1, 2), (0xB5, 0xC5, 3), (0xB9, 0xC9, 4)):
            for base, half in ((hi, 1), (lo, 0)):
                if base <= addr < base + 3:
                    val = self._measure(addr - base)[idx] / POWER_LSB
                    n = int(math.floor(val + 0.5)) & 0xFFFFFFFF
                    return n >> 16 if half else n & 0xFFFF
        if 0xBD <= addr < 0xC0:
            _, _, pw, _, sva = self._measure(addr - 0xBD)
            return int(math.floor(pw / sva * 1000 + 0.5)) & 0xFFFF if sva else 0
        return self.regs[addr]

    def _read_reg(self, addr):
        if addr == LAST_SPI_DATA:
            return self.last
        if addr == CRC_ERR_STATUS:
            return 0 if self.unlocked or self.crc() == self.regs[CRC_DIGEST] else 0x0001
        if addr in ENERGY_REGS:
            v = self.regs[addr]
            self.regs[addr] = 0
            return v
        return self._result(addr)

    def _write_reg(self, addr, value):
        self.writes.append((addr, value))
        if addr == SOFT_RESET:
            if value == RESET_KEY:
                self.reset()
            return
        if addr == CFG_REG_ACC_EN:
            if value == UNLOCK_KEY:
                self.unlocked = True
            else:
                self.unlocked = False
                self.regs[CRC_DIGEST] = self.crc()
            self.regs[addr] = value
            return
        if addr in _GATED and not self.unlocked:
            return      # write-protected: silently ignored, as the chip does
        if addr in _GATED or addr in (0x75, 0x76, 0x73, 0x74):
            self.regs[addr] = value

    # ---- SPI frame machine ----------------------------------------------------------------------
    def _cs_changed(self, level):
        if level == 0:
            self._pos = 0
        else:
            self._pos = -1

    def _exchange(self, mosi):
        pos = self._pos
        if pos < 0:
            return 0xFF                      # not selected: MISO floats high
        self._pos = pos + 1
        if pos == 0:
            self._hi = mosi
            return 0x00
        if pos == 1:
            self._addr = ((self._hi & 0x03) << 8) | mosi
            self._reading = bool(self._hi & 0x80)
            if self._reading:
                v = self._read_reg(self._addr)
                self._value = v
                self._wire = v
                if self._glitches:
                    if self._glitch_phase % self._glitch_period == 0:
                        self._glitches -= 1
                        self._wire = v ^ self._glitch_xor
                    self._glitch_phase += 1
            return 0x00
        if pos == 2:
            if self._reading:
                return (self._wire >> 8) & 0xFF
            self._dhi = mosi
            return 0x00
        if pos == 3:
            self.frames += 1
            if self._reading:
                self.last = self._value
                return self._wire & 0xFF
            value = (self._dhi << 8) | mosi
            self._write_reg(self._addr, value)
            if self._addr != SOFT_RESET:
                self.last = value
            return 0x00
        return 0xFF
