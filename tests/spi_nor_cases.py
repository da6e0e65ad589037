# SpiNor driver against the SPI-level simulator; shared by test_spi_nor.py (CPython) and mpt_spi_nor.py
# (MicroPython unix port).
import gc
import os

from mptest import raises
from sim import chips
from sim.nor import TIMING_US, NorFlash
from sim.spi import SpiNorSim
from spi_sim_cases import cmd, xfer
from umeter.hal.spi_nor import ERASE_TIMEOUT_US, PROGRAM_TIMEOUT_US, FlashError, SpiNor


def make(chip="W25Q16JV", verify=False, **kw):
    gc.collect()
    sim = SpiNorSim(chip, **kw)
    return sim, attach(sim, verify)


def attach(sim, verify=False):
    return SpiNor(sim.spi, sim.cs, sleep_us=sim.sleep_us, ticks_us=sim.ticks_us, verify=verify)


def pattern(n, seed):
    out = bytearray(n)
    x = seed * 2654435761 + 1
    for i in range(n):
        x = (x * 1103515245 + 12345) & 0x7FFFFFFF
        out[i] = (x >> 16) & 0xFF
    return bytes(out)


def check_identify(name):
    sim, nor = make(name)
    chip = chips.by_name(name)
    jid = chip["jedec_id"]
    assert nor.jedec_id == (jid[0] << 16) | (jid[1] << 8) | jid[2]
    assert nor.name == name
    assert nor.geometry_source == "sfdp"
    geometry = (nor.size, nor.page_size, nor.sector_size)
    assert geometry == (chip["size"], chip["page_size"], chip["sector_size"])
    return sim, nor


def check_round_trips(name):
    sim, nor = check_identify(name)
    ss, ps = nor.sector_size, nor.page_size
    # A span across several pages and a sector boundary, at odd offsets.
    addr = 2 * ss - 700
    data = pattern(1500, 1)
    nor.write(addr, data)
    assert nor.read(addr, len(data)) == data
    assert sim.flash.read(addr, len(data)) == data
    assert nor.read(addr - 1, 1) == b"\xff" and nor.read(addr + len(data), 1) == b"\xff"
    assert sim.stats()["page_wraps"] == 0
    # program() inside one page; NOR semantics (AND) through the driver.
    nor.program(10 * ps + 3, b"\xf0\x0f")
    nor.program(10 * ps + 3, b"\x3c\x3c")
    assert nor.read(10 * ps + 3, 2) == b"\x30\x0c"
    nor.program(11 * ps - 4, b"last")  # ends exactly on the page end
    buf = bytearray(4)
    nor.readinto(11 * ps - 4, buf)
    assert buf == b"last"
    # Erase one sector: it alone goes back to 0xFF.
    nor.write(3 * ss, b"keep")
    nor.erase_sector(2 * ss)
    assert nor.read(2 * ss, ss) == b"\xff" * ss
    assert nor.read(addr, 700) == data[:700]
    assert nor.read(3 * ss, 4) == b"keep"
    # The end of the chip.
    end = nor.size - 300
    nor.write(end, data[:300])
    assert nor.read(end, 300) == data[:300]
    nor.erase_sector(nor.size - ss)
    assert nor.read(end, 300) == b"\xff" * 300
    # Interface errors (DESIGN 3.1): ValueError, nothing sent to the chip.
    before = sim.stats()["commands"].get(0x02, 0)
    with raises(ValueError, match="page"):
        nor.program(ps - 1, b"ab")
    with raises(ValueError):
        nor.erase_sector(ss + 1)
    with raises(ValueError):
        nor.read(nor.size - 1, 2)
    with raises(ValueError):
        nor.write(nor.size - 1, b"ab")
    with raises(ValueError):
        nor.erase_sector(nor.size)
    assert sim.stats()["commands"].get(0x02, 0) == before
    assert nor.read(0, 0) == b""


def check_wrap_caught():
    sim, nor = make()
    ps = nor.page_size
    # Raw PP across the page end wraps inside the page (that is what the chip does) ...
    xfer(sim, b"\x06")
    xfer(sim, cmd(0x02, 4 * ps - 2) + b"WRAP")
    sim.sleep_us(1000)
    assert nor.read(4 * ps - 2, 2) == b"WR" and nor.read(3 * ps, 2) == b"AP"
    assert nor.read(4 * ps, 2) == b"\xff\xff"
    assert sim.stats()["page_wraps"] == 1
    # ... and the driver never lets it happen: program() refuses, write() splits.
    with raises(ValueError, match="page boundary"):
        nor.program(6 * ps - 2, b"WRAP")
    nor.write(6 * ps - 2, b"WRAP")
    assert nor.read(6 * ps - 2, 4) == b"WRAP" and nor.read(5 * ps, 2) == b"\xff\xff"
    big = pattern(5 * ps + 77, 2)
    nor.write(7 * ps + 200, big)
    assert nor.read(7 * ps + 200, len(big)) == big
    assert sim.stats()["page_wraps"] == 1


def check_timeouts():
    # Datasheet maxima (typ x ~7 for program, x ~9 for erase) complete inside the driver's time-outs.
    sim, nor = make(timing="max")
    t = sim.clock_us
    nor.program(0, b"slow")
    assert TIMING_US["page_program_max"] <= sim.clock_us - t < PROGRAM_TIMEOUT_US
    t = sim.clock_us
    nor.erase_sector(0)
    assert TIMING_US["sector_erase_max"] <= sim.clock_us - t < ERASE_TIMEOUT_US
    assert nor.read(0, 4) == b"\xff" * 4
    # A chip whose BUSY never clears: a clear error once the time-out has passed, not a hang.
    sim.stuck_busy = True
    t = sim.clock_us
    with raises(FlashError, match="busy"):
        nor.program(0, b"x")
    assert PROGRAM_TIMEOUT_US <= sim.clock_us - t <= PROGRAM_TIMEOUT_US + 200
    t = sim.clock_us
    with raises(FlashError, match="busy"):
        nor.erase_sector(0)
    assert ERASE_TIMEOUT_US <= sim.clock_us - t <= ERASE_TIMEOUT_US + 2000
    # Stuck busy from power-up: the driver cannot identify it and says so.
    sim2 = SpiNorSim("W25Q16JV")
    sim2.stuck_busy = True
    with raises(FlashError, match="status 03 (a chip answers status but stays busy)"):
        attach(sim2)


def check_busy_at_start():
    # The MCU reset in the middle of an erase: the driver waits for it, then identifies the chip.
    sim = SpiNorSim("W25Q16JV")
    xfer(sim, b"\x06")
    xfer(sim, cmd(0x20, 0))
    assert sim.busy()
    nor = attach(sim)
    assert nor.name == "W25Q16JV" and not sim.busy()


def check_missing_chip():
    for level, word in ((0xFF, "high"), (0x00, "low")):
        sim = SpiNorSim("W25Q16JV")
        sim.miso_stuck = level
        with raises(FlashError, match="no SPI NOR flash answers") as e:
            attach(sim)
        assert word in str(e.value)
    # The chip vanishes after start-up: writes fail clearly (0xFF reads as busy, 0x00 as no WEL).
    sim, nor = make()
    sim.miso_stuck = 0xFF
    with raises(FlashError, match="busy"):
        nor.program(0, b"x")
    sim.miso_stuck = 0x00
    with raises(FlashError, match="WEL"):
        nor.erase_sector(0)


def check_wren_ignored():
    sim, nor = make()
    sim.wren_ignored = True
    with raises(FlashError, match="WEL not set"):
        nor.program(0, b"x")
    with raises(FlashError, match="WEL not set"):
        nor.erase_sector(0)
    assert sim.flash.read(0, 1) == b"\xff"


def check_power_down():
    sim, nor = make()
    nor.write(0, b"sleepy")
    nor.power_down()
    assert sim.deep_power_down
    assert xfer(sim, b"\x9f", 3) == b"\xff\xff\xff"  # the chip really ignores commands now
    assert nor.read(0, 6) == b"sleepy"  # reads wake it (AB + tRES1)
    assert not sim.deep_power_down
    nor.power_down()
    nor.wake()
    assert not sim.deep_power_down
    nor.power_down()
    nor.program(6, b"!")
    assert nor.read(0, 7) == b"sleepy!"
    # A chip left in deep power-down (e.g. before a soft reset) is woken by the constructor.
    nor.power_down()
    nor2 = attach(sim)
    assert nor2.name == "W25Q16JV" and nor2.read(0, 7) == b"sleepy!"


def check_verify():
    # Past endurance the array fails to clear bits; verify=True notices on read-back.
    chip = chips.by_name("W25Q16JV")
    for kind in ("program", "erase"):
        flash = NorFlash(chip["size"], endurance=0, seed=7)
        sim = SpiNorSim(chip, flash=flash)
        nor = attach(sim, verify=True)
        failed = False
        if kind == "program":
            flash.erase_sector(0)  # now past endurance (1 erase > 0)
        for k in range(16):
            try:
                if kind == "program":
                    nor.program(k * nor.page_size, bytes(nor.page_size))
                else:
                    flash.program(k * nor.sector_size, bytes(nor.page_size))
                    nor.erase_sector(k * nor.sector_size)
            except FlashError as e:
                assert "verify failed" in str(e)
                failed = True
                break
        assert failed, kind
    # A healthy chip verifies fine, also programming over bits already cleared.
    sim, nor = make(verify=True)
    nor.write(100, b"\x0f" * 300)
    nor.write(100, b"\xf0" * 300)
    assert nor.read(100, 300) == bytes(300)
    nor.erase_sector(0)


def check_fallback_table():
    chip = dict(chips.by_name("W25Q16JV"))
    chip["sfdp"] = b""
    sim, nor = make(chip)
    assert nor.geometry_source == "table" and nor.name == "W25Q16JV"
    assert (nor.size, nor.page_size, nor.sector_size) == (2 * 1024 * 1024, 256, 4096)
    nor.write(4090, b"fallback")
    assert nor.read(4090, 8) == b"fallback"
    # A part neither in the table nor with SFDP: refused with a clear error.
    chip["jedec_id"] = b"\xc8\x40\x15"
    with raises(FlashError, match="no SFDP"):
        make(chip)
    # With SFDP the unknown part is fine: geometry comes from its table.
    chip["sfdp"] = chips.by_name("W25Q16JV")["sfdp"]
    sim, nor = make(chip)
    assert nor.name is None and nor.geometry_source == "sfdp" and nor.size == 2 * 1024 * 1024


def check_block_device():
    sim, nor = make()
    ss = nor.sector_size
    assert nor.ioctl(4, 0) == nor.size // ss and nor.ioctl(5, 0) == ss
    assert nor.ioctl(1, 0) == 0 and nor.ioctl(3, 0) == 0
    data = pattern(600, 3)
    nor.writeblocks(2, data, 1000)  # extended form: program only, across pages
    buf = bytearray(600)
    nor.readblocks(2, buf, 1000)
    assert buf == data
    nor.writeblocks(2, data[:10], 1000)  # no erase: AND with what is there
    nor.readblocks(2, buf, 1000)
    assert buf == data
    assert nor.ioctl(6, 2) == 0
    nor.readblocks(2, buf, 1000)
    assert buf == b"\xff" * 600
    nor.writeblocks(3, b"\x00" * ss)
    nor.writeblocks(3, b"\xaa" * ss)  # simple form: erases the block first
    whole = bytearray(ss)
    nor.readblocks(3, whole)
    assert whole == b"\xaa" * ss


class _NullBus:
    """A bus + pin that never allocate: RDSR answers WEL and ready, everything else reads 0xFF."""

    def __init__(self):
        self.last = 0

    def write(self, buf):
        self.last = buf[0]

    def readinto(self, buf, write=0):
        v = 0x02 if self.last == 0x05 else 0xFF
        for i in range(len(buf)):
            buf[i] = v

    def __call__(self, v=None):
        return 1


def check_hot_paths_do_not_allocate(heap_lock, heap_unlock):
    sim, nor = make(verify=True)
    bus = _NullBus()
    nor._spi = bus  # the driver's own code under test: the simulator allocates, real SPI does not
    nor._cs = bus
    buf = bytearray(nor.page_size)
    page = b"\xff" * nor.page_size
    heap_lock()
    try:
        for _ in range(3):
            nor.readinto(4096, buf)
            nor.program(4096, page)
            nor.program(4100, b"\xff\xff")
            nor.erase_sector(4096)
            nor.readblocks(1, buf, 256)
            nor.ioctl(6, 1)
    finally:
        heap_unlock()
    assert buf == page


def check_littlefs(vfs, name):
    sim, nor = make(name)
    vfs.VfsLfs2.mkfs(nor)
    fs = vfs.VfsLfs2(nor)
    vfs.mount(fs, "/flash")
    try:
        blobs = {}
        for i in range(6):
            body = pattern(300 + 1500 * i, i)
            with open("/flash/file%d.bin" % i, "wb") as f:
                f.write(body)
            blobs["file%d.bin" % i] = body
        with open("/flash/log.txt", "w") as f:
            for i in range(50):
                f.write("record %d\n" % i)
                f.flush()
        os.mkdir("/flash/sub")
        with open("/flash/sub/x", "wb") as f:
            f.write(b"nested")
    finally:
        vfs.umount("/flash")
    assert sim.stats()["page_wraps"] == 0
    erases = sim.flash.stats()["erases"]
    assert erases > 0
    # Remount from the same chip through a fresh driver: everything is there.
    nor2 = attach(sim)
    vfs.mount(vfs.VfsLfs2(nor2), "/flash")
    try:
        for fname, body in blobs.items():
            with open("/flash/" + fname, "rb") as f:
                assert f.read() == body, fname
        with open("/flash/log.txt") as f:
            lines = f.read().split("\n")
        assert lines[0] == "record 0" and lines[49] == "record 49"
        with open("/flash/sub/x", "rb") as f:
            assert f.read() == b"nested"
        assert sorted(os.listdir("/flash")) == sorted(list(blobs) + ["log.txt", "sub"])
    finally:
        vfs.umount("/flash")
