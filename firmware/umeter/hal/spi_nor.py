"""SPI NOR flash driver (W25Q class and any JESD216 part with 3-byte addresses).

    nor = SpiNor(spi, cs)                     # machine.SPI (mode 0), CS as an output Pin
    nor.read(addr, n) / nor.readinto(addr, buf)
    nor.program(addr, data)                   # one page at most (ValueError when it crosses one)
    nor.write(addr, data)                     # any length, split at page boundaries
    nor.erase_sector(addr)                    # sector-aligned
    nor.power_down() / nor.wake()
    vfs.VfsLfs2(nor)                          # block device protocol, extended form

The chip is identified by its JEDEC id; its geometry comes from SFDP (the JESD216 basic flash
parameter table) or, without SFDP, from a small built-in table. Every program and erase polls BUSY
with a time-out derived from the datasheet maximum and raises FlashError when the chip does not
answer, stays busy, or refuses write enable. With verify=True each program and erase is read back.
The hot paths (readinto, program, erase_sector) do not allocate: command buffers are made once.
"""
import struct
import time

from micropython import const

_READ_FAST = const(0x0B)  # FAST READ: one dummy byte, valid at any bus clock the chip supports
_PP = const(0x02)
_SE = const(0x20)
_RDSR = const(0x05)
_WREN = const(0x06)
_RDID = const(0x9F)
_RDSFDP = const(0x5A)
_DPD = const(0xB9)
_RELEASE = const(0xAB)
_RST_EN = const(0x66)
_RST = const(0x99)

_SR_BUSY = const(0x01)
_SR_WEL = const(0x02)

# Datasheet figures (Winbond W25Q16JV/64JV/128JV): tPP max 3 ms, tSE max 400 ms; twice that as the
# time-out, so only a chip that is really stuck trips it.
PROGRAM_TIMEOUT_US = const(6000)
ERASE_TIMEOUT_US = const(800000)
_PROGRAM_POLL_US = const(50)
_ERASE_POLL_US = const(1000)
_T_RES1_US = const(5)      # release from deep power-down: 3 us max
_T_RST_US = const(40)      # software reset: 30 us max
_TICKS_MASK = const(0x3FFFFFFF)  # elapsed time modulo the 2**30 ticks period of the ports

# JEDEC id -> (name, size, page size, sector size, 4 KB erase opcode), used when SFDP is missing.
_KNOWN = {
    0xEF4015: ("W25Q16JV", 2 * 1024 * 1024, 256, 4096, 0x20),
    0xEF4017: ("W25Q64JV", 8 * 1024 * 1024, 256, 4096, 0x20),
    0xEF4018: ("W25Q128JV", 16 * 1024 * 1024, 256, 4096, 0x20),
}
_MAX_3BYTE = const(16 * 1024 * 1024)


class FlashError(Exception):
    """The flash chip does not answer, stays busy, refuses write enable, or reads back wrong."""


class SpiNor:
    def __init__(self, spi, cs, sleep_us=None, ticks_us=None, verify=False):
        self._spi = spi
        self._cs = cs
        self._sleep_us = sleep_us or time.sleep_us
        self._ticks_us = ticks_us or time.ticks_us
        self.verify = verify
        self._cmd = bytearray(5)
        mv = memoryview(self._cmd)
        self._cmd1 = mv[:1]
        self._cmd4 = mv[:4]
        self._cmd5 = mv[:5]
        self._sr = bytearray(1)
        self._asleep = False
        cs(1)
        self.wake()  # a chip left in deep power-down answers nothing else
        jid = self._read_id()
        if not _plausible(jid):
            # A chip still busy from before our reset ignores RDID: let it finish, then ask again.
            try:
                self._wait_ready(ERASE_TIMEOUT_US, _ERASE_POLL_US, "start-up")
            except FlashError:
                pass
            jid = self._read_id()
            if not _plausible(jid):
                sr = self._read_sr()
                if sr & _SR_BUSY and sr != 0xFF:
                    hint = "a chip answers status but stays busy"
                else:
                    hint = "MISO stuck %s: check wiring, CS and power" % ("high" if sr else "low")
                raise FlashError("no SPI NOR flash answers: JEDEC id %06x, status %02x (%s)"
                                 % (jid, sr, hint))
        self.jedec_id = jid
        self._command(_RST_EN)
        self._command(_RST)
        self._sleep_us(_T_RST_US)
        known = _KNOWN.get(jid)
        self.name = known[0] if known else None
        geometry = self._read_sfdp()
        if geometry is not None:
            self.geometry_source = "sfdp"
        elif known is not None:
            geometry = known[1:]
            self.geometry_source = "table"
        else:
            raise FlashError("flash %06x has no SFDP table and is not in the built-in table" % jid)
        self.size, self.page_size, self.sector_size, self._erase_op = geometry
        if self.size > _MAX_3BYTE:
            raise FlashError("flash %06x holds %d bytes: 4-byte addressing is not supported"
                             % (jid, self.size))
        self._vbuf = bytearray(self.page_size)
        self._ff = b"\xff" * self.page_size

    # --- wire level ----------------------------------------------------------------------------------
    def _command(self, op):
        self._cmd[0] = op
        self._cs(0)
        self._spi.write(self._cmd1)
        self._cs(1)

    def _set_cmd(self, op, addr):
        c = self._cmd
        c[0] = op
        c[1] = (addr >> 16) & 0xFF
        c[2] = (addr >> 8) & 0xFF
        c[3] = addr & 0xFF
        c[4] = 0

    def _read_sr(self):
        self._cmd[0] = _RDSR
        self._cs(0)
        self._spi.write(self._cmd1)
        self._spi.readinto(self._sr)
        self._cs(1)
        return self._sr[0]

    def _read_id(self):
        buf = bytearray(3)
        self._cmd[0] = _RDID
        self._cs(0)
        self._spi.write(self._cmd1)
        self._spi.readinto(buf)
        self._cs(1)
        return (buf[0] << 16) | (buf[1] << 8) | buf[2]

    def _wait_ready(self, timeout_us, poll_us, what):
        ticks = self._ticks_us
        start = ticks()
        while self._read_sr() & _SR_BUSY:
            if (ticks() - start) & _TICKS_MASK > timeout_us:
                raise FlashError("%s: flash still busy after %d us (BUSY stuck, or no chip)"
                                 % (what, timeout_us))
            self._sleep_us(poll_us)

    def _write_enable(self):
        self._command(_WREN)
        if not self._read_sr() & _SR_WEL:
            raise FlashError("write enable refused: WEL not set after WREN (faulty or protected chip)")

    # --- SFDP ----------------------------------------------------------------------------------------
    def _sfdp_read(self, addr, buf):
        self._set_cmd(_RDSFDP, addr)
        self._cs(0)
        self._spi.write(self._cmd5)
        self._spi.readinto(buf)
        self._cs(1)

    def _read_sfdp(self):
        """(size, page size, sector size, erase opcode) from the BFPT, or None without a usable one."""
        head = bytearray(8)
        self._sfdp_read(0, head)
        if head[:4] != b"SFDP" or head[5] != 1:
            return None
        ph = bytearray(8)
        for i in range(min(head[6] + 1, 8)):
            self._sfdp_read(8 + 8 * i, ph)
            if ph[0] == 0x00 and ph[7] == 0xFF and ph[2] == 1:  # BFPT, major revision 1
                break
        else:
            return None
        ndw = min(ph[3], 16)
        if ndw < 9:
            return None
        table = bytearray(4 * ndw)
        self._sfdp_read(ph[4] | (ph[5] << 8) | (ph[6] << 16), table)
        dw = struct.unpack("<%dI" % ndw, table)
        if dw[1] & 0x80000000:
            size = (1 << (dw[1] & 0x7FFFFFFF)) // 8
        else:
            size = (dw[1] + 1) // 8
        if dw[0] & 3 == 1:  # 4 KB erase supported, opcode in bits 15:8
            sector, op = 4096, (dw[0] >> 8) & 0xFF
        else:  # the smallest of the erase types in DW8-9
            sector = op = 0
            for k in range(4):
                word = dw[7 + k // 2] >> (16 * (k & 1))
                if word & 0xFF and (sector == 0 or 1 << (word & 0xFF) < sector):
                    sector, op = 1 << (word & 0xFF), (word >> 8) & 0xFF
        page = 1 << ((dw[10] >> 4) & 0xF) if ndw >= 11 else 256
        if not sector or size <= 0 or size % sector or sector % page:
            return None
        return size, page, sector, op

    # --- device interface (DESIGN 3.1) ---------------------------------------------------------------
    def _check(self, addr, n):
        if addr < 0 or n < 0 or addr + n > self.size:
            raise ValueError("range 0x%x+%d outside the %d-byte flash" % (addr, n, self.size))

    def readinto(self, addr, buf):
        n = len(buf)
        self._check(addr, n)
        if n == 0:
            return
        if self._asleep:
            self.wake()
        self._set_cmd(_READ_FAST, addr)
        self._cs(0)
        self._spi.write(self._cmd5)
        self._spi.readinto(buf)
        self._cs(1)

    def read(self, addr, n):
        self._check(addr, n)
        if n == 0:
            return b""
        if self._asleep:
            self.wake()
        self._set_cmd(_READ_FAST, addr)
        self._cs(0)
        self._spi.write(self._cmd5)
        data = self._spi.read(n)
        self._cs(1)
        return data

    def program(self, addr, data):
        """NOR program (stored &= data) inside one page; ValueError if it crosses a page boundary."""
        n = len(data)
        self._check(addr, n)
        if n == 0:
            return
        ps = self.page_size
        if addr // ps != (addr + n - 1) // ps:
            raise ValueError("program 0x%x+%d crosses a %d-byte page boundary" % (addr, n, ps))
        self._program_page(addr, data, n)

    def write(self, addr, data):
        """Program any span, split at page boundaries (never lets the chip wrap inside a page)."""
        n = len(data)
        self._check(addr, n)
        mv = memoryview(data)
        ps = self.page_size
        i = 0
        while i < n:
            k = min(n - i, ps - (addr + i) % ps)
            self._program_page(addr + i, mv[i:i + k], k)
            i += k

    def _program_page(self, addr, data, n):
        if self._asleep:
            self.wake()
        self._write_enable()
        self._set_cmd(_PP, addr)
        self._cs(0)
        self._spi.write(self._cmd4)
        self._spi.write(data)
        self._cs(1)
        self._wait_ready(PROGRAM_TIMEOUT_US, _PROGRAM_POLL_US, "page program")
        if self.verify:
            # A page-aligned read into the preallocated buffer: no allocation.
            off = addr % self.page_size
            vbuf = self._vbuf
            self.readinto(addr - off, vbuf)
            for i in range(n):
                if vbuf[off + i] & ~data[i] & 0xFF:  # a bit that should have cleared did not
                    raise FlashError("program verify failed at 0x%x: read %02x after programming %02x"
                                     % (addr + i, vbuf[off + i], data[i]))

    def erase_sector(self, addr):
        self._check(addr, 1)
        ss = self.sector_size
        if addr % ss:
            raise ValueError("erase address 0x%x is not %d-aligned" % (addr, ss))
        if self._asleep:
            self.wake()
        self._write_enable()
        self._set_cmd(self._erase_op, addr)
        self._cs(0)
        self._spi.write(self._cmd4)
        self._cs(1)
        self._wait_ready(ERASE_TIMEOUT_US, _ERASE_POLL_US, "sector erase")
        if self.verify:
            a = addr
            while a < addr + ss:  # (a range() with a variable step would allocate)
                self.readinto(a, self._vbuf)
                if self._vbuf != self._ff:
                    raise FlashError("erase verify failed: sector 0x%x not blank near 0x%x" % (addr, a))
                a += self.page_size

    # --- power ---------------------------------------------------------------------------------------
    def power_down(self):
        """Deep power-down (B9): the chip ignores everything until wake(); reads/writes wake it."""
        self._command(_DPD)
        self._asleep = True

    def wake(self):
        """Release from deep power-down (AB) and wait tRES1."""
        self._command(_RELEASE)
        self._sleep_us(_T_RES1_US)
        self._asleep = False

    # --- block device protocol (extended form), for vfs.VfsLfs2 --------------------------------------
    def readblocks(self, block, buf, offset=0):
        self.readinto(block * self.sector_size + offset, buf)

    def writeblocks(self, block, buf, offset=None):
        ss = self.sector_size
        if offset is None:  # simple form: whole blocks, erased here first
            for b in range(block, block + (len(buf) + ss - 1) // ss):
                self.erase_sector(b * ss)
            offset = 0
        self.write(block * ss + offset, buf)

    def ioctl(self, op, arg):
        if op == 4:  # block count
            return self.size // self.sector_size
        if op == 5:  # block size
            return self.sector_size
        if op == 6:  # erase block
            self.erase_sector(arg * self.sector_size)
            return 0
        if op in (1, 2, 3):  # init, shutdown, sync: nothing cached
            return 0
        return None


def _plausible(jid):
    # A manufacturer byte of 0x00 or 0xFF is no JEDEC manufacturer: MISO held low or floating high.
    return (jid >> 16) not in (0x00, 0xFF)
