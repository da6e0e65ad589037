"""ATM90E32(AS) poly-phase metering IC over SPI: configuration, verified access, readings, calibration.

The chip is a *measurement source*, not a sample source: it does the metering itself and we read its
result registers. `reading(phase)` returns a dict with the engine's status keys:

    vrms, irms (float V, A), p_w, q_var, s_va (float), pf (float, signed), freq_hz (float),
    ea_imp_mwh, ea_exp_mwh        active energy import / export, integer mWh (Wh * 1000)
    er_imp_mvarh, er_exp_mvarh    reactive energy (Q > 0 / Q < 0), integer mvarh
    es_mvah                       apparent energy, integer mVAh
    phase                         0 = A, 1 = B, 2 = C

`engine_status(reading)` re-keys a reading the way the metering engine reports (OBIS codes as in its
`status` and `registers()`: 32.7.0 V, 1.7.0/2.7.0 W, ..., 1.8.0..4.8.0 in mWh/mvarh), so the app can
treat both sources alike.

Energy registers are read-to-clear 16-bit counters in units of 0.01 CF (CF = 1/MC kWh; MC = 3200 imp/kWh
gives 3.125 mWh per count). The driver adds every read into exact integer per-phase counts and converts
to mWh only for the report (floor of counts * 10000 / MC), so nothing is lost to rounding. At 3.125 mWh a
count the 16-bit register holds 204.8 Wh: read at least every 10 s at 15 kW per phase. An energy read
that fails confirmation raises, and the counts of that one read are lost (the chip cleared them).

Wire format (datasheet): one frame per CS low, 16-bit address word (bit 15 = 1 for read, 10-bit register
address), then 16-bit data, MSB first, SPI mode 3 (CPOL = 1, CPHA = 1); the board owns and configures the
bus (see SPI_POLARITY / SPI_PHASE / SPI_BAUD). For a read the address and data go out as two transfers
inside one frame, which leaves a few microseconds between them (reference drivers pause there too).

Integrity, as the ATM90E32 provides it (it has no CS0..CS3 checksum registers; those belong to the
ATM90E26/ATM90E36):
- LastSPIData (0x78) echoes the data of the previous read or write. Every write is confirmed through it;
  every read is compared with it, and on a mismatch LastSPIData is read twice more: if both agree that
  value is used (a glitch on MISO, counted in `spi_retries`), otherwise ChecksumError.
- Configuration and calibration registers are writable only while CfgRegAccEn (0x7F) = 0x55AA. When it
  is written back to another value the chip computes a CRC over them into CRCDigest (0x7A) and keeps
  re-checking; a mismatch shows in CRCErrStatus (0x79). `check()` (run before every reading) raises
  ChecksumError when CRCErrStatus is non-zero or CRCDigest differs from the value latched when we
  locked the configuration. Every configuration write is also read back.
- A chip that does not answer (MISO stuck at 0xFF or 0x00, wrong chip select) fails the CfgRegAccEn echo
  and raises ChipAbsentError.

LSB scalings (datasheet / application note): Urms 0.01 V (+ UrmsLSB[15:8] in 1/256 of that), Irms
0.001 A (+ IrmsLSB[15:8]), mean P/Q/S as the signed 32-bit value Pmean<<16 | PmeanLSB at 0.00032 W/var/VA,
PFmean signed 0.001, Freq 0.01 Hz. Calibration registers are written as raw register values.
"""
import time

from micropython import const

from umeter.metering import obis

SPI_POLARITY = 1
SPI_PHASE = 1
SPI_BAUD = 200_000          # conservative; the board may go faster if its wiring allows

READ = const(0x8000)

# Status / special registers
METER_EN = const(0x00)
SOFT_RESET = const(0x70)
EMM_STATE0 = const(0x71)
EMM_STATE1 = const(0x72)
LAST_SPI_DATA = const(0x78)
CRC_ERR_STATUS = const(0x79)
CRC_DIGEST = const(0x7A)
CFG_REG_ACC_EN = const(0x7F)
# Configuration
PLCONST_H = const(0x31)
PLCONST_L = const(0x32)
MMODE0 = const(0x33)
MMODE1 = const(0x34)
# Calibration: power path (A at base, B at +2, C at +4) and measurement (A at base, B +4, C +8)
POFFSET_A = const(0x41)
QOFFSET_A = const(0x42)
PQGAIN_A = const(0x47)
PHI_A = const(0x48)
UGAIN_A = const(0x61)
IGAIN_A = const(0x62)
UOFFSET_A = const(0x63)
IOFFSET_A = const(0x64)
# Energy (read-to-clear), phase A; B, C follow at +1, +2
APENERGY_A = const(0x81)
ANENERGY_A = const(0x85)
RPENERGY_A = const(0x89)
RNENERGY_A = const(0x8D)
SENERGY_A = const(0x91)
# Mean power: high word and low word, phase A; B, C at +1, +2
PMEAN_A = const(0xB1)
QMEAN_A = const(0xB5)
SMEAN_A = const(0xB9)
PFMEAN_A = const(0xBD)
PMEAN_A_LSB = const(0xC1)
QMEAN_A_LSB = const(0xC5)
SMEAN_A_LSB = const(0xC9)
URMS_A = const(0xD9)
IRMS_A = const(0xDD)
URMS_A_LSB = const(0xE9)
IRMS_A_LSB = const(0xED)
FREQ = const(0xF8)

SOFT_RESET_KEY = const(0x789A)
CFG_UNLOCK_KEY = const(0x55AA)
CFG_LOCK = const(0x0000)
PL_CONSTANT_NUM = 450_000_000_000   # PLconst = 4.5e11 / MC (default 0x0861C468 <-> 3200 imp/kWh)
MMODE0_3P4W = const(0x0087)         # 3P4W, A/B/C in the sums: the value common ATM90E32 boards use
MMODE0_60HZ = const(0x1000)

URMS_LSB_V = 0.01
IRMS_LSB_A = 0.001
POWER_LSB = 0.00032
PF_LSB = 0.001
FREQ_LSB_HZ = 0.01

# Calibration fields -> (register of phase A, stride per phase, signed)
CAL_FIELDS = {
    "ugain": (UGAIN_A, 4, False),
    "igain": (IGAIN_A, 4, False),
    "uoffset": (UOFFSET_A, 4, True),
    "ioffset": (IOFFSET_A, 4, True),
    "pqgain": (PQGAIN_A, 2, True),
    "phi": (PHI_A, 2, True),
    "poffset": (POFFSET_A, 2, True),
    "qoffset": (QOFFSET_A, 2, True),
}
DEFAULT_CAL = {"ugain": 0x8000, "igain": 0x8000, "uoffset": 0, "ioffset": 0,
               "pqgain": 0, "phi": 0, "poffset": 0, "qoffset": 0}

ENERGY_KEYS = ("ea_imp_mwh", "ea_exp_mwh", "er_imp_mvarh", "er_exp_mvarh", "es_mvah")
_ENERGY_REGS = (APENERGY_A, ANENERGY_A, RPENERGY_A, RNENERGY_A, SENERGY_A)


class Atm90e32Error(Exception):
    """Anything wrong with the metering IC: base class of the errors below."""


class ChipAbsentError(Atm90e32Error):
    """The chip does not answer (MISO stuck high/low, wrong CS, no supply)."""


class ChecksumError(Atm90e32Error):
    """A checksum or echo check failed: configuration CRC, CRCDigest changed, or an unconfirmed transfer."""


def _s16(v):
    return v - 0x10000 if v & 0x8000 else v


def _s32(v):
    return v - 0x100000000 if v & 0x80000000 else v


def plconst_for(mc):
    """PLconst register pair value for a meter constant of `mc` impulses per kWh."""
    if not 1 <= mc <= 1_000_000:
        raise ValueError("meter constant out of range")
    return PL_CONSTANT_NUM // mc


class Atm90e32:
    """Driver for one ATM90E32 on `spi` (machine.SPI-like, already set to mode 3) with chip select `cs`
    (machine.Pin-like, active low). `phases`: which of A=0, B=1, C=2 are wired. `calibration`: a dict
    phase -> dict of CAL_FIELDS values (missing fields take DEFAULT_CAL). `sleep_ms` is injectable."""

    def __init__(self, spi, cs, phases=(0,), line_hz=50, mc=3200, pga=0, calibration=None, sleep_ms=None):
        if line_hz not in (50, 60):
            raise ValueError("line_hz must be 50 or 60")
        for p in phases:
            if p not in (0, 1, 2):
                raise ValueError("phase must be 0, 1 or 2")
        self._spi = spi
        self._cs = cs
        self.phases = tuple(phases)
        self.line_hz = line_hz
        self.mc = mc
        self._plconst = plconst_for(mc)
        self.pga = pga & 0xFFFF
        self._cal = {}
        for p in self.phases:
            c = dict(DEFAULT_CAL)
            if calibration and p in calibration:
                c.update(calibration[p])
            self._cal[p] = c
        self._sleep_ms = sleep_ms or getattr(time, "sleep_ms", None)
        self._tx = bytearray(4)
        self._rx = bytearray(4)
        self._addr_tx = memoryview(self._tx)[0:2]
        self._data_rx = memoryview(self._rx)[0:2]
        self.digest = None
        self.spi_retries = 0
        self._energy = {}
        for p in self.phases:
            self._energy[p] = [0, 0, 0, 0, 0]
        cs.value(1)

    # ---- raw access ------------------------------------------------------------------------------
    def _frame_read(self, addr):
        self._tx[0] = ((addr | READ) >> 8) & 0xFF
        self._tx[1] = addr & 0xFF
        self._cs.value(0)
        try:
            self._spi.write(self._addr_tx)
            self._spi.readinto(self._data_rx, 0xFF)
        finally:
            self._cs.value(1)
        return (self._rx[0] << 8) | self._rx[1]

    def _frame_write(self, addr, value):
        tx = self._tx
        tx[0] = (addr >> 8) & 0x03
        tx[1] = addr & 0xFF
        tx[2] = (value >> 8) & 0xFF
        tx[3] = value & 0xFF
        self._cs.value(0)
        try:
            self._spi.write(tx)
        finally:
            self._cs.value(1)

    def read_register(self, addr):
        """One register, confirmed against LastSPIData (see the module docstring)."""
        value = self._frame_read(addr)
        echo = self._frame_read(LAST_SPI_DATA)
        if echo == value:
            return value
        again = self._frame_read(LAST_SPI_DATA)
        if again == echo:
            self.spi_retries += 1
            return echo
        raise ChecksumError("SPI read of register 0x%02X not confirmed (got 0x%04X, echo 0x%04X/0x%04X)"
                            % (addr, value, echo, again))

    def write_register(self, addr, value, verify=False):
        """Write one register, confirmed through LastSPIData; `verify` also reads the register back."""
        value &= 0xFFFF
        self._frame_write(addr, value)
        echo = self._frame_read(LAST_SPI_DATA)
        if echo != value:
            self._absent_check(echo)
            raise ChecksumError("write of 0x%04X to register 0x%02X not confirmed (LastSPIData 0x%04X)"
                                % (value, addr, echo))
        if verify:
            back = self.read_register(addr)
            if back != value:
                raise ChecksumError("register 0x%02X reads back 0x%04X after writing 0x%04X (locked?)"
                                    % (addr, back, value))

    def _absent_check(self, echo):
        if echo in (0xFFFF, 0x0000):
            raise ChipAbsentError("ATM90E32 does not answer (bus reads 0x%04X): check CS, wiring, supply"
                                  % echo)

    # ---- configuration ---------------------------------------------------------------------------
    def configure(self):
        """Soft reset, metering configuration, calibration of every wired phase, then lock and latch
        the CRC digest. Raises ChipAbsentError or ChecksumError."""
        self._frame_write(SOFT_RESET, SOFT_RESET_KEY)
        if self._sleep_ms:
            self._sleep_ms(100)    # the chip re-initialises after a soft reset
        self._unlock()
        self.write_register(METER_EN, 0x0001, verify=True)
        self.write_register(PLCONST_H, self._plconst >> 16, verify=True)
        self.write_register(PLCONST_L, self._plconst & 0xFFFF, verify=True)
        mm0 = MMODE0_3P4W | (MMODE0_60HZ if self.line_hz == 60 else 0)
        self.write_register(MMODE0, mm0, verify=True)
        self.write_register(MMODE1, self.pga, verify=True)
        for p in self.phases:
            self._write_cal(p, self._cal[p])
        self._lock()
        for p in self.phases:
            self._energy[p] = [0, 0, 0, 0, 0]

    def _unlock(self):
        self._frame_write(CFG_REG_ACC_EN, CFG_UNLOCK_KEY)
        echo = self._frame_read(LAST_SPI_DATA)
        if echo != CFG_UNLOCK_KEY:
            self._absent_check(echo)
            raise ChecksumError("CfgRegAccEn unlock not confirmed (LastSPIData 0x%04X)" % echo)

    def _lock(self):
        self.write_register(CFG_REG_ACC_EN, CFG_LOCK)
        self.digest = None
        err = self.read_register(CRC_ERR_STATUS)
        if err:
            raise ChecksumError("configuration CRC error right after locking (CRCErrStatus=0x%04X)" % err)
        self.digest = self.read_register(CRC_DIGEST)

    def _write_cal(self, phase, cal):
        for name in cal:
            if name not in CAL_FIELDS:
                raise ValueError("unknown calibration field %r" % name)
            base, stride, signed = CAL_FIELDS[name]
            v = int(cal[name])
            lo, hi = (-0x8000, 0x7FFF) if signed else (0, 0xFFFF)
            if not lo <= v <= hi:
                raise ValueError("%s=%d out of range" % (name, v))
            self.write_register(base + stride * phase, v & 0xFFFF, verify=True)

    def check(self):
        """Raise ChecksumError unless the configuration CRC is intact and unchanged since we locked it."""
        if self.digest is None:
            raise Atm90e32Error("not configured: call configure() first")
        err = self.read_register(CRC_ERR_STATUS)
        if err:
            raise ChecksumError("configuration CRC mismatch in the chip (CRCErrStatus=0x%04X)" % err)
        d = self.read_register(CRC_DIGEST)
        if d != self.digest:
            raise ChecksumError("CRCDigest changed: 0x%04X, locked with 0x%04X" % (d, self.digest))

    # ---- calibration -----------------------------------------------------------------------------
    def set_calibration(self, phase, **fields):
        """Write calibration fields (CAL_FIELDS names, raw register values) of one phase, then re-lock
        and latch the new digest. E.g. set_calibration(0, ugain=0x8123, phi=-12)."""
        if phase not in self._cal:
            raise ValueError("phase %d is not wired" % phase)
        for name in fields:
            if name not in CAL_FIELDS:
                raise ValueError("unknown calibration field %r" % name)
        self._unlock()
        self._write_cal(phase, fields)
        self._lock()
        self._cal[phase].update(fields)

    def calibration(self, phase):
        """The calibration fields of one phase as read from the chip (signed where the register is)."""
        out = {}
        for name in CAL_FIELDS:
            base, stride, signed = CAL_FIELDS[name]
            v = self.read_register(base + stride * phase)
            out[name] = _s16(v) if signed else v
        return out

    def set_voltage_gain(self, phase, value):
        self.set_calibration(phase, ugain=value)

    def set_current_gain(self, phase, value):
        self.set_calibration(phase, igain=value)

    def set_offsets(self, phase, voltage=0, current=0):
        self.set_calibration(phase, uoffset=voltage, ioffset=current)

    def set_phase(self, phase, value):
        """Phase-angle compensation register PhiX (raw)."""
        self.set_calibration(phase, phi=value)

    def calibrate_voltage(self, phase, reference_v):
        """Scale Ugain so the present reading matches `reference_v` (gain' = gain * ref / measured)."""
        return self._calibrate(phase, "ugain", self._urms(phase), reference_v)

    def calibrate_current(self, phase, reference_a):
        return self._calibrate(phase, "igain", self._irms(phase), reference_a)

    def _calibrate(self, phase, field, measured, reference):
        if measured <= 0 or reference <= 0:
            raise ValueError("need a positive measurement and reference")
        new = int(self._cal[phase][field] * reference / measured + 0.5)
        if not 1 <= new <= 0xFFFF:
            raise ValueError("gain %d out of range: wrong reference or wiring" % new)
        self.set_calibration(phase, **{field: new})
        return new

    # ---- measurements ----------------------------------------------------------------------------
    def _urms(self, p):
        hi = self.read_register(URMS_A + p)
        lo = self.read_register(URMS_A_LSB + p) >> 8
        return ((hi << 8) | lo) * (URMS_LSB_V / 256)

    def _irms(self, p):
        hi = self.read_register(IRMS_A + p)
        lo = self.read_register(IRMS_A_LSB + p) >> 8
        return ((hi << 8) | lo) * (IRMS_LSB_A / 256)

    def _power(self, reg_hi, reg_lo):
        return _s32((self.read_register(reg_hi) << 16) | self.read_register(reg_lo)) * POWER_LSB

    def reading(self, phase=None):
        """Verify the configuration CRC, then read one phase (default: the first wired one)."""
        p = self.phases[0] if phase is None else phase
        if p not in self._energy:
            raise ValueError("phase %d is not wired" % p)
        self.check()
        return self._read_phase(p)

    def readings(self):
        """One CRC check, then a reading dict per wired phase, in `phases` order."""
        self.check()
        return [self._read_phase(p) for p in self.phases]

    def _read_phase(self, p):
        acc = self._energy[p]
        for k in range(5):
            acc[k] += self.read_register(_ENERGY_REGS[k] + p)
        r = {
            "phase": p,
            "vrms": self._urms(p),
            "irms": self._irms(p),
            "p_w": self._power(PMEAN_A + p, PMEAN_A_LSB + p),
            "q_var": self._power(QMEAN_A + p, QMEAN_A_LSB + p),
            "s_va": self._power(SMEAN_A + p, SMEAN_A_LSB + p),
            "pf": _s16(self.read_register(PFMEAN_A + p)) * PF_LSB,
            "freq_hz": self.read_register(FREQ) * FREQ_LSB_HZ,
        }
        for k in range(5):
            r[ENERGY_KEYS[k]] = acc[k] * 10000 // self.mc
        return r

    def energy_counts(self, phase):
        """Raw accumulated energy counts (0.01 CF each) of one phase: [AP, AN, RP, RN, S]."""
        return list(self._energy[phase])


_V_CODES = (obis.VOLTAGE, "52.7.0", "72.7.0")        # L1, L2, L3
_I_CODES = (obis.CURRENT, "51.7.0", "71.7.0")


def engine_status(r):
    """A reading() dict keyed like the engine's status plus registers(): OBIS codes, energy in
    integer mWh / mvarh. Phases B and C use the L2/L3 voltage and current codes."""
    p = r["p_w"]
    q = r["q_var"]
    return {
        _V_CODES[r["phase"]]: r["vrms"], _I_CODES[r["phase"]]: r["irms"],
        obis.P_IMPORT: p if p > 0 else 0.0, obis.P_EXPORT: -p if p < 0 else 0.0,
        obis.Q_IMPORT: q if q > 0 else 0.0, obis.Q_EXPORT: -q if q < 0 else 0.0,
        obis.S_APPARENT: r["s_va"], obis.POWER_FACTOR: r["pf"], obis.FREQUENCY: r["freq_hz"],
        "p": p, "q": q,
        obis.A_IMPORT: r["ea_imp_mwh"], obis.A_EXPORT: r["ea_exp_mwh"],
        obis.R_IMPORT: r["er_imp_mvarh"], obis.R_EXPORT: r["er_exp_mvarh"],
    }
