"""Simulated SPI NOR flash (W25Q class) with power cuts, wear and a datasheet timing model.

Runs under CPython and MicroPython alike (the firmware under test on the unix port uses it in place
of the chip). It satisfies the flash-device interface of DESIGN.md 3.1:

    f = NorFlash(size, sector_size=4096, page_size=256, path=None, seed=0)
    f.read(addr, n) / f.program(addr, data) / f.erase_sector(addr)
    f.arm_cut(n); f.power_on(); f.stats()

NOR semantics: programming can only clear bits (stored &= data), erasing sets a whole sector to 0xFF.
A program may not cross a page boundary. Everything random (torn writes, worn-out sectors) comes from
a private xorshift generator seeded by `seed`, so a run is reproducible on both interpreters.
"""

import sys
from array import array

from sim.rng import XorShift32

# MicroPython's unix files are unbuffered (every write is a syscall, so a killed process loses nothing)
# and their flush() is an fsync: skip it there. CPython buffers: flush after every write.
_FLUSH = sys.implementation.name != "micropython"

# Datasheet model (Winbond W25Q16JV/64JV/128JV, same page/sector timing). Microseconds.
TIMING_US = {
    "byte_program_first": 30,      # tBP1 typ
    "byte_program_next": 2.5,      # tBP2 typ, each further byte
    "page_program_typ": 400,       # tPP typ
    "page_program_max": 3000,      # tPP max
    "sector_erase_typ": 45000,     # tSE typ (4 KB)
    "sector_erase_max": 400000,    # tSE max
    "block_erase_typ": 150000,     # tBE2 typ (64 KB)
    "block_erase_max": 2000000,    # tBE2 max
}
READ_CLOCK_HZ = 50000000          # plain READ (03h) up to 50 MHz
ENDURANCE = 100000                # program/erase cycles per sector


class PowerCut(Exception):
    """The supply failed during (or after) an operation; call power_on() to continue."""


def program_time_us(nbytes):
    """Modelled busy time of one page program of `nbytes` bytes (typical)."""
    t = TIMING_US["byte_program_first"] + TIMING_US["byte_program_next"] * (nbytes - 1)
    return min(t, TIMING_US["page_program_typ"])


def read_time_us(nbytes):
    """Bus time of a plain read: 4 command/address bytes plus the data, 8 clocks each."""
    return (4 + nbytes) * 8 * 1000000 / READ_CLOCK_HZ


def _seeded_rng(seed):
    return XorShift32((seed * 2654435761 + 0x9E3779B9) & 0xFFFFFFFF)


class NorFlash:
    """in_ram: keep the image in a bytearray (default without `path`). With `path` the image lives in
    the file only (default), so a 16 MiB chip costs the MicroPython heap nothing: every read, program
    and erase goes through the file. in_ram=True with a path keeps both (reads from RAM)."""

    def __init__(self, size, sector_size=4096, page_size=256, path=None, seed=0, endurance=ENDURANCE,
                 in_ram=None):
        if size <= 0 or size % sector_size or sector_size % page_size:
            raise ValueError("size must be a multiple of sector_size, and sector_size of page_size")
        if in_ram is None:
            in_ram = path is None
        if not in_ram and path is None:
            raise ValueError("an image outside RAM needs a path")
        self.size = size
        self.sector_size = sector_size
        self.page_size = page_size
        self.endurance = endurance
        self._rng = _seeded_rng(seed)
        self._ff = b"\xff" * page_size  # erase pattern, written a page at a time (no sector-sized temp)
        self._mem = None
        if in_ram:
            self._mem = bytearray(size)
            mv = memoryview(self._mem)
            # erased state by doubling the 0xFF prefix in place: log2(size) copies, no temporary, because
            # every small allocation next to a 16 MiB block costs ~1 ms on the 32-bit port's heap
            mv[0:page_size] = self._ff
            done = page_size
            while done < size:
                n = min(done, size - done)
                mv[done:done + n] = mv[0:n]
                done += n
        self._file = None
        if path is not None:
            self._open_image(path)
        self._erase_counts = array("I", [0] * (size // sector_size))  # 4 B per sector, not a list
        self._cut_countdown = 0
        self._dead = False
        self.last_busy_us = 0
        self._bytes_read = 0
        self._bytes_programmed = 0
        self._erases = 0
        self._busy_us = 0

    # --- image: RAM, file, or both -------------------------------------------------------------------
    def _open_image(self, path):
        try:
            f = open(path, "r+b")
        except OSError:
            f = open(path, "w+b")
            for _ in range(0, self.size, self.page_size):
                f.write(self._ff)
            f.flush()
            self._file = f
            return
        have = f.seek(0, 2)
        if have != self.size:
            f.close()
            raise ValueError("image %s holds %d bytes, expected %d" % (path, have, self.size))
        if self._mem is not None:
            f.seek(0)
            _file_readinto(f, memoryview(self._mem))
        self._file = f

    def _load(self, addr, n):
        # the stored bytes as a new bytearray
        if self._mem is not None:
            return self._mem[addr:addr + n]
        buf = bytearray(n)
        self._file.seek(addr)
        _file_readinto(self._file, memoryview(buf))
        return buf

    def _save(self, addr, data):
        n = len(data)
        if self._mem is not None:
            self._mem[addr:addr + n] = data
            if self._file is None:
                return
            data = memoryview(self._mem)[addr:addr + n]
        f = self._file
        f.seek(addr)
        f.write(data)
        if _FLUSH:
            f.flush()

    def _fill_ff(self, addr, n):
        ff = self._ff
        mem = self._mem
        if mem is not None:
            mv = memoryview(mem)
            for a in range(addr, addr + n, len(ff)):
                mv[a:a + len(ff)] = ff
        f = self._file
        if f is not None:
            f.seek(addr)
            for _ in range(0, n, len(ff)):
                f.write(ff)
            if _FLUSH:
                f.flush()

    def close(self):
        if self._file is not None:
            self._file.close()
            self._file = None

    # --- power ---------------------------------------------------------------------------------------
    def arm_cut(self, n):
        """Tear the n-th program or erase from now (n >= 1); then every access raises PowerCut."""
        if n < 1:
            raise ValueError("n must be >= 1")
        self._cut_countdown = n

    def disarm_cut(self):
        self._cut_countdown = 0

    def power_on(self):
        self._dead = False

    def _check_power(self):
        if self._dead:
            raise PowerCut("flash has no power")

    def _cut_now(self):
        """True when the operation starting now is the armed one to be torn."""
        if self._cut_countdown:
            self._cut_countdown -= 1
            if self._cut_countdown == 0:
                self._dead = True
                return True
        return False

    # --- device interface ----------------------------------------------------------------------------
    def _check_range(self, addr, n):
        if addr < 0 or n < 0 or addr + n > self.size:
            raise ValueError("address range 0x%x+%d outside the %d-byte device" % (addr, n, self.size))

    def read(self, addr, n):
        self._check_power()
        self._check_range(addr, n)
        self._bytes_read += n
        if self._mem is not None:
            return bytes(memoryview(self._mem)[addr:addr + n])
        self._file.seek(addr)
        data = self._file.read(n)
        if len(data) != n:
            raise OSError("image file too short")
        return data

    def readinto(self, addr, buf):
        """Extension: read len(buf) bytes into buf without allocating."""
        self._check_power()
        n = len(buf)
        self._check_range(addr, n)
        self._bytes_read += n
        if self._mem is not None:
            buf[:] = memoryview(self._mem)[addr:addr + n]
            return
        self._file.seek(addr)
        _file_readinto(self._file, memoryview(buf))

    def program(self, addr, data):
        self._check_power()
        n = len(data)
        self._check_range(addr, n)
        if n == 0:
            return
        if addr // self.page_size != (addr + n - 1) // self.page_size:
            raise ValueError("program 0x%x+%d crosses a %d-byte page boundary" % (addr, n, self.page_size))
        old = self._load(addr, n)
        new = _and_bytes(old, data, n)
        if self._erase_counts[addr // self.sector_size] > self.endurance:
            new = self._worn_program(old, new)
        if self._cut_now():
            self._save(addr, self._torn_program(old, new))
            raise PowerCut("power cut during program at 0x%x" % addr)
        self._save(addr, new)
        self._bytes_programmed += n
        self.last_busy_us = program_time_us(n)
        self._busy_us += self.last_busy_us

    def erase_sector(self, addr):
        self._check_power()
        self._check_range(addr, 1)
        if addr % self.sector_size:
            raise ValueError("erase address 0x%x is not %d-aligned" % (addr, self.sector_size))
        sector = addr // self.sector_size
        self._erase_counts[sector] += 1
        self._erases += 1
        if self._cut_now():
            self._torn_erase(addr)
            raise PowerCut("power cut during erase at 0x%x" % addr)
        self._fill_ff(addr, self.sector_size)
        if self._erase_counts[sector] > self.endurance:
            self._worn_erase(addr)
        self.last_busy_us = TIMING_US["sector_erase_typ"]
        self._busy_us += self.last_busy_us

    # --- failure models ------------------------------------------------------------------------------
    def _torn_program(self, old, new):
        """A random prefix programmed, the next byte with a random subset of its cleared bits."""
        n = len(new)
        done = self._rng.below(n + 1)
        out = bytearray(new[:done]) + bytearray(old[done:])
        if done < n:
            to_clear = old[done] & ~new[done] & 0xFF
            out[done] = old[done] & ~(to_clear & self._rng.next()) & 0xFF
        return out

    def _torn_erase(self, addr):
        """Some bytes erased, the rest keep their old value: a random mix."""
        rng = self._rng
        threshold = rng.below(257)  # how far the erase had got, as a share of bytes
        sec = self._load(addr, self.sector_size)
        for i in range(self.sector_size):
            if rng.below(256) < threshold:
                sec[i] = 0xFF
        self._save(addr, sec)

    def _worn_erase(self, addr):
        """Past endurance: with probability 1/2 a few bits stay programmed."""
        rng = self._rng
        if rng.below(2):
            for _ in range(1 + rng.below(4)):
                i = addr + rng.below(self.sector_size)
                b = self._load(i, 1)
                b[0] &= ~(1 << rng.below(8)) & 0xFF
                self._save(i, b)

    def _worn_program(self, old, new):
        """Past endurance: with probability 1/2 some bits fail to clear."""
        rng = self._rng
        if rng.below(2):
            new = bytearray(new)
            for _ in range(1 + rng.below(2)):
                i = rng.below(len(new))
                new[i] = old[i]
        return new

    # --- statistics ----------------------------------------------------------------------------------
    def stats(self):
        return {
            "bytes_read": self._bytes_read,
            "bytes_programmed": self._bytes_programmed,
            "erases": self._erases,
            "erase_counts": list(self._erase_counts),
            "busy_us": self._busy_us,
        }

    def reset_stats(self):
        self._bytes_read = self._bytes_programmed = self._erases = 0
        self._busy_us = 0


def _file_readinto(f, mv):
    # regular files read short only at their end; loop anyway (a stream may split reads)
    got = 0
    n = len(mv)
    while got < n:
        k = f.readinto(mv[got:])
        if not k:
            raise OSError("image file too short")
        got += k


def _and_bytes(a, b, n):
    # Whole-buffer AND through big ints: fast on both CPython and the MicroPython unix port.
    return (int.from_bytes(a, "big") & int.from_bytes(b, "big")).to_bytes(n, "big")
