"""SPI-level simulator of a W25Q-class NOR flash: a `machine.SPI` + chip-select `Pin` look-alike.

Runs under CPython and MicroPython. It decodes the commands a real chip understands over a
`sim.nor.NorFlash` and behaves like the chip on the wire:

    from sim.spi import SpiNorSim
    sim = SpiNorSim("W25Q128JV")            # a chip model from sim.chips (name or dict)
    nor = SpiNor(sim.spi, sim.cs, sleep_us=sim.sleep_us, ticks_us=sim.ticks_us)

Commands: 9F RDID, 5A SFDP (3 address bytes + 8 dummy clocks), 05 RDSR1, 06 WREN, 04 WRDI,
03 READ, 0B FAST READ (1 dummy byte), 02 PP, 20 SE (4 KB), D8 BE (64 KB), B9 deep power-down,
AB release (3 dummy bytes, then the legacy device id), 66/99 reset enable/reset.

- CS low starts a command, CS high ends it; program, erase, WREN, WRDI, B9, AB and reset act on
  CS high, and only when CS rises on the byte the datasheet requires (erase: exactly 4 bytes).
- Program/erase without WEL are ignored; WEL is cleared when the operation completes.
- BUSY (SR1 bit 0) lasts the modelled time (datasheet typical, or maximum with timing="max") on a
  simulated clock: each byte on the bus costs 8 clocks at `clock_hz`, and `sleep_us()` advances it.
  Point the driver's sleep/ticks hooks at `sim.sleep_us` / `sim.ticks_us`: polling loops then end
  deterministically without wall time.
- While busy, every command but RDSR is ignored. In deep power-down everything but AB is ignored,
  and after AB (and after a reset) the chip ignores commands for tRES1 (3 us) / tRST (30 us).
- Page program wraps inside the page, as the chip does when data runs past the page end.
- An ignored command, or no chip at all, answers with the idle MISO level (0xFF: pull-up).

Faults: `sim.miso_stuck = 0xFF or 0x00` (no chip: MISO floats high / is held low, nothing executes),
`sim.stuck_busy = True` (BUSY never clears), `sim.wren_ignored = True` (WEL never gets set).
A `PowerCut` from an armed NorFlash propagates out of the CS-high that executes the operation;
`sim.power_on()` restores power.
"""
from sim.pin import PinSim
from sim import chips as _chips
from sim.nor import TIMING_US, NorFlash, program_time_us

SR_BUSY = 0x01
SR_WEL = 0x02

T_RES1_US = 3      # release from deep power-down to the next command
T_RST_US = 30      # software reset to the next command

# Header bytes (opcode included) before the data phase of each command.
_HEADER = {0x03: 4, 0x0B: 5, 0x5A: 5, 0x02: 4, 0x20: 4, 0xD8: 4, 0xAB: 4}


def _model(chip):
    if isinstance(chip, str):
        return _chips.by_name(chip)
    return chip


def SimPin(sim):
    """The chip-select pin (active low): CS low selects the chip, high ends and executes the command."""
    return PinSim(1, lambda level: sim._deselect() if level else sim._select())


class SimSPI:
    """The bus: write, read, readinto, write_readinto as machine.SPI has them."""

    def __init__(self, sim):
        self._sim = sim

    def init(self, *args, **kwargs):
        pass

    def deinit(self):
        pass

    def write(self, buf):
        self._sim._clock(buf, 0, None)

    def read(self, nbytes, write=0x00):
        out = bytearray(nbytes)
        self._sim._clock(None, write, out)
        return bytes(out)

    def readinto(self, buf, write=0x00):
        self._sim._clock(None, write, buf)

    def write_readinto(self, write_buf, read_buf):
        if len(write_buf) != len(read_buf):
            raise ValueError("buffers must be the same length")
        self._sim._clock(write_buf, 0, read_buf)


class SpiNorSim:
    def __init__(self, chip="W25Q128JV", flash=None, clock_hz=50000000, timing="typ", seed=0, path=None):
        chip = _model(chip)
        if timing not in ("typ", "max"):
            raise ValueError("timing is 'typ' or 'max'")
        self.chip = chip
        self.timing = timing
        self.page_size = chip["page_size"]
        self.sector_size = chip["sector_size"]
        self.block_size = chip["block_size"]
        self.size = chip["size"]
        if flash is None:
            flash = NorFlash(self.size, self.sector_size, self.page_size, path=path, seed=seed)
        elif flash.size != self.size or flash.page_size != self.page_size:
            raise ValueError("flash geometry does not match the chip model")
        self.flash = flash
        self.spi = SimSPI(self)
        self.cs = SimPin(self)
        # Fault knobs.
        self.miso_stuck = None
        self.stuck_busy = False
        self.wren_ignored = False
        self.idle_miso = 0xFF
        # Simulated time, in nanoseconds (ints: exact and allocation-light on both interpreters).
        self._ns = 0
        self._ns_per_byte = 8 * 1000000000 // clock_hz
        self._latch = bytearray(self.page_size)
        self._counts = {}
        self._page_wraps = 0
        self._ignored = 0
        self._stray = 0
        self.last_busy_us = 0
        self._power_reset()

    def _power_reset(self):
        self._selected = False
        self._wel = False
        self._dpd = False
        self._busy_until = 0
        self._deaf_until = 0
        self._prev = -1
        self._op = -1
        self._n = 0

    # --- time ----------------------------------------------------------------------------------------
    def ticks_us(self):
        return self._ns // 1000

    def sleep_us(self, us):
        self._ns += int(us) * 1000

    def sleep_ms(self, ms):
        self._ns += int(ms) * 1000000

    @property
    def clock_us(self):
        return self._ns // 1000

    @property
    def clock_ns(self):
        return self._ns

    # --- chip state ----------------------------------------------------------------------------------
    def busy(self):
        return self.stuck_busy or self._ns < self._busy_until

    def status(self):
        """SR1 as the chip would send it now: WEL reads 1 until a program/erase completes."""
        if self.busy():
            return SR_BUSY | SR_WEL
        return SR_WEL if self._wel else 0

    @property
    def deep_power_down(self):
        return self._dpd

    def power_on(self):
        """Power back after a cut: volatile state lost, the array kept."""
        self.flash.power_on()
        self._power_reset()
        self.cs._level = 1

    def stats(self):
        return {
            "commands": dict(self._counts),
            "page_wraps": self._page_wraps,
            "ignored": self._ignored,
            "stray_bytes": self._stray,
            "clock_us": self._ns // 1000,
        }

    # --- bus -----------------------------------------------------------------------------------------
    def _select(self):
        self._selected = True
        self._op = -1
        self._n = 0
        self._listen = self.miso_stuck is None

    def _clock(self, mosi, fill, miso):
        n = len(mosi) if mosi is not None else len(miso)
        if not self._selected or not self._listen:
            if not self._selected:
                self._stray += n
            out = self.idle_miso if self.miso_stuck is None else self.miso_stuck
            if miso is not None:
                for j in range(n):
                    miso[j] = out
            self._ns += n * self._ns_per_byte
            return
        i = 0
        while i < n:
            if self._op < 0:
                self._opcode(mosi[i] if mosi is not None else fill)
                if miso is not None:
                    miso[i] = self.idle_miso
                self._n = 1
                self._ns += self._ns_per_byte
                i += 1
                continue
            if self._op == 0 or self._n < self._hdr:
                # Header byte (address or dummy); op 0 = an ignored command, clocked through.
                if self._op and self._n < 4 and self._hdr > 1:
                    self._addr = (self._addr << 8) | (mosi[i] if mosi is not None else fill)
                if miso is not None:
                    miso[i] = self.idle_miso
                self._n += 1
                self._ns += self._ns_per_byte
                i += 1
                continue
            i = self._data(mosi, fill, miso, i, n)

    def _opcode(self, op):
        self._addr = 0
        self._hdr = _HEADER.get(op, 1)
        self._counts[op] = self._counts.get(op, 0) + 1
        deaf = self._ns < self._deaf_until
        if deaf or (self._dpd and op != 0xAB) or (self.busy() and op != 0x05):
            self._ignored += 1
            self._op = 0
            return
        self._op = op
        if op == 0x02:
            self._latch[:] = b"\xff" * self.page_size
            self._pp_sent = 0

    def _data(self, mosi, fill, miso, i, n):
        """Data phase of the current command from byte i; returns the next index."""
        op = self._op
        npb = self._ns_per_byte
        if op == 0x03 or op == 0x0B:
            k = n - i
            addr = self._addr % self.size
            if miso is not None:
                mv = memoryview(miso)
                j = i
                while j < n:
                    # The address counter wraps at the end of the array, as on the chip.
                    seg = min(n - j, self.size - addr)
                    self.flash.readinto(addr, mv[j:j + seg])
                    addr = (addr + seg) % self.size
                    j += seg
            else:
                addr = (addr + k) % self.size
            self._addr = addr
            self._n += k
            self._ns += k * npb
            return n
        if op == 0x02:
            page = self.page_size
            k = n - i
            pos = (self._addr + self._pp_sent) % page
            latch = self._latch
            src = memoryview(mosi) if mosi is not None else None
            j = i
            while j < n:
                seg = min(n - j, page - pos)
                if src is not None:
                    latch[pos:pos + seg] = src[j:j + seg]
                else:
                    for t in range(pos, pos + seg):
                        latch[t] = fill
                pos = (pos + seg) % page
                j += seg
            if miso is not None:
                for j in range(i, n):
                    miso[j] = self.idle_miso
            self._pp_sent += k
            self._n += k
            self._ns += k * npb
            return n
        # Byte-wise answers: status (changes as time passes), ids, SFDP.
        out = self.idle_miso
        self._ns += npb
        d = self._n - self._hdr
        if op == 0x05:
            out = self.status()
        elif op == 0x9F:
            jid = self.chip["jedec_id"]
            out = jid[d] if d < len(jid) else 0x00
        elif op == 0x5A:
            a = self._addr + d
            sfdp = self.chip["sfdp"]
            out = sfdp[a] if a < len(sfdp) else 0xFF
        elif op == 0xAB:
            out = self.chip["legacy_id"]
        if miso is not None:
            miso[i] = out
        self._n += 1
        return i + 1

    def _deselect(self):
        self._selected = False
        op, n = self._op, self._n
        if not self._listen or op <= 0:
            return
        now = self._ns
        prev, self._prev = self._prev, op
        if op == 0x06 and n == 1:
            if not self.wren_ignored:
                self._wel = True
        elif op == 0x04 and n == 1:
            self._wel = False
        elif op == 0x02 and n > 4 and self._wel:
            self._page_program()
        elif (op == 0x20 or op == 0xD8) and n == 4 and self._wel:
            self._erase(op)
        elif op == 0xB9 and n == 1:
            self._dpd = True
        elif op == 0xAB:
            if self._dpd:
                self._dpd = False
                self._deaf_until = now + T_RES1_US * 1000
        elif op == 0x99 and n == 1 and prev == 0x66:
            self._wel = False
            self._deaf_until = now + T_RST_US * 1000

    def _busy_for(self, us):
        self.last_busy_us = us
        self._busy_until = self._ns + int(us * 1000)

    def _page_program(self):
        page = self.page_size
        start = self._addr % page
        base = (self._addr % self.size) - start
        sent = self._pp_sent
        self._wel = False
        if start + sent > page:
            self._page_wraps += 1
        count = min(sent, page)
        latch = self._latch
        if self.timing == "max":
            self._busy_for(TIMING_US["page_program_max"])
        else:
            self._busy_for(program_time_us(count))
        if count == page:
            self.flash.program(base, latch)
            return
        first = min(count, page - start)
        self.flash.program(base + start, latch[start:start + first])
        if count > first:
            self.flash.program(base, latch[:count - first])

    def _erase(self, op):
        self._wel = False
        size = self.sector_size if op == 0x20 else self.block_size
        kind = "sector_erase_" if op == 0x20 else "block_erase_"
        self._busy_for(TIMING_US[kind + self.timing])
        base = (self._addr % self.size) // size * size
        for a in range(base, base + size, self.sector_size):
            self.flash.erase_sector(a)
