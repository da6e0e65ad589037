# SPI NOR simulator semantics, checked on the wire; shared by test_spi_sim.py (CPython) and
# mpt_spi_sim.py (MicroPython unix port), so both interpreters run the same checks.
import gc

from mptest import raises
from sim import chips
from sim.nor import TIMING_US, PowerCut, program_time_us
from sim.spi import SpiNorSim

SMALL = "W25Q16JV"


def xfer(sim, out, nread=0):
    """One command: CS low, send `out`, clock in `nread` bytes, CS high."""
    sim.cs(0)
    sim.spi.write(out)
    data = sim.spi.read(nread) if nread else b""
    sim.cs(1)
    return data


def cmd(op, addr):
    return bytes((op, (addr >> 16) & 0xFF, (addr >> 8) & 0xFF, addr & 0xFF))


def sr(sim):
    return xfer(sim, b"\x05", 1)[0]


def wait_ready(sim, step_us=10, limit_us=3000000):
    start = sim.clock_us
    while sr(sim) & 1:
        sim.sleep_us(step_us)
        assert sim.clock_us - start < limit_us, "simulated chip never became ready"
    return sim.clock_us - start


def program(sim, addr, data):
    xfer(sim, b"\x06")
    xfer(sim, cmd(0x02, addr) + data)
    wait_ready(sim)


def check_ids_and_sfdp():
    for chip in chips.CHIPS:
        sim = None
        gc.collect()
        sim = SpiNorSim(chip["name"])
        assert xfer(sim, b"\x9f", 3) == chip["jedec_id"]
        table = chip["sfdp"]
        assert xfer(sim, cmd(0x5A, 0) + b"\x00", len(table)) == table
        assert xfer(sim, cmd(0x5A, 4) + b"\x00", 4) == table[4:8]
        assert xfer(sim, cmd(0x5A, len(table)) + b"\x00", 4) == b"\xff" * 4
        assert xfer(sim, b"\xab\x00\x00\x00", 2) == bytes((chip["legacy_id"], chip["legacy_id"]))


def check_reads():
    sim = SpiNorSim(SMALL)
    sim.flash.program(0x1000, b"hello, flash")
    assert xfer(sim, cmd(0x03, 0x1000), 12) == b"hello, flash"
    assert xfer(sim, cmd(0x0B, 0x1000) + b"\x00", 12) == b"hello, flash"
    # Without the dummy byte FAST READ is one byte behind: the dummy is really clocked through.
    assert xfer(sim, cmd(0x0B, 0x1000), 5) == b"\xffhell"
    # readinto and write_readinto behave like read.
    buf = bytearray(5)
    sim.cs(0)
    sim.spi.write(cmd(0x03, 0x1007))
    sim.spi.readinto(buf)
    sim.cs(1)
    assert buf == b"flash"
    out = bytearray(9)
    sim.cs(0)
    sim.spi.write_readinto(cmd(0x03, 0x1000) + b"\x00" * 5, out)
    sim.cs(1)
    assert out[4:] == b"hello"
    # The address counter wraps at the end of the array.
    sim.flash.program(0, b"AB")
    sim.flash.program(sim.size - 2, b"yz")
    assert xfer(sim, cmd(0x03, sim.size - 2), 4) == b"yzAB"


def check_wren_and_wel():
    sim = SpiNorSim(SMALL)
    assert sr(sim) == 0
    xfer(sim, b"\x06")
    assert sr(sim) == 0x02
    xfer(sim, b"\x04")
    assert sr(sim) == 0
    # Program and erase without WEL are ignored.
    xfer(sim, cmd(0x02, 0) + b"\x00\x00")
    assert sr(sim) == 0 and sim.flash.read(0, 2) == b"\xff\xff"
    sim.flash.program(0x2000, b"\x00")
    xfer(sim, cmd(0x20, 0x2000))
    assert sim.flash.read(0x2000, 1) == b"\x00"
    # WREN only counts when CS rises right after the opcode byte.
    xfer(sim, b"\x06\x00")
    assert sr(sim) == 0
    # A program clears bits only (AND) and clears WEL when it completes.
    xfer(sim, b"\x06")
    xfer(sim, cmd(0x02, 0) + b"\x0f\xf0")
    assert sr(sim) == 0x03
    wait_ready(sim)
    assert sr(sim) == 0
    program(sim, 0, b"\x3c\x3c")
    assert sim.flash.read(0, 2) == b"\x0c\x30"


def check_busy_gating():
    sim = SpiNorSim(SMALL)
    sim.flash.program(0x100, b"data")
    xfer(sim, b"\x06")
    xfer(sim, cmd(0x02, 0) + bytes(256))
    assert sim.last_busy_us == program_time_us(256)
    start = sim.clock_us
    # While busy only RDSR answers; reads and ids see the idle bus, other commands do nothing.
    assert xfer(sim, b"\x9f", 3) == b"\xff\xff\xff"
    assert xfer(sim, cmd(0x03, 0x100), 4) == b"\xff" * 4
    xfer(sim, b"\x06")
    xfer(sim, cmd(0x02, 0x100) + bytes(4))
    waited = wait_ready(sim)
    assert sim.flash.read(0x100, 4) == b"data"
    assert sim.stats()["ignored"] == 4
    # BUSY lasted the modelled time: the clock ran from the end of PP until the first ready poll.
    assert program_time_us(256) - 5 <= sim.clock_us - start <= program_time_us(256) + 15
    assert waited <= program_time_us(256) + 15
    # Sector erase: typical time by default, datasheet maximum with timing="max".
    for timing, key in (("typ", "sector_erase_typ"), ("max", "sector_erase_max")):
        s = SpiNorSim(SMALL, timing=timing)
        xfer(s, b"\x06")
        xfer(s, cmd(0x20, 0))
        t = wait_ready(s, step_us=100)
        assert TIMING_US[key] - 100 <= t <= TIMING_US[key] + 200
    # RDSR clocked continuously sees BUSY clear mid-command, as on the chip.
    xfer(sim, b"\x06")
    xfer(sim, cmd(0x02, 0x200) + b"\x00")
    stream = xfer(sim, b"\x05", 1000)
    assert stream[0] == 0x03 and stream[-1] == 0x00


def check_page_program_wraps():
    sim = SpiNorSim(SMALL)
    ps = sim.page_size
    base = 5 * ps
    # 10 bytes from offset 250 of a 256-byte page: 6 land at the end, 4 wrap to the page start.
    program(sim, base + 250, b"0123456789")
    assert sim.flash.read(base + 250, 6) == b"012345"
    assert sim.flash.read(base, 4) == b"6789"
    assert sim.flash.read(base + 4, 246) == b"\xff" * 246
    assert sim.flash.read(base + ps, 4) == b"\xff" * 4
    assert sim.stats()["page_wraps"] == 1
    # More than a page: the last page_size bytes sent are the ones kept.
    data = bytes(i & 0xFF for i in range(ps + 10))
    program(sim, 8 * ps, data)
    expect = bytearray(ps)
    for i in range(ps + 10):
        expect[i % ps] = data[i]
    assert sim.flash.read(8 * ps, ps) == expect
    assert sim.stats()["page_wraps"] == 2
    # Inside one page nothing wraps.
    program(sim, 9 * ps, b"x" * ps)
    assert sim.stats()["page_wraps"] == 2


def check_erase_commands():
    sim = SpiNorSim(SMALL)
    for a in (0x0FFF, 0x1000, 0x10000 - 1, 0x10000, 0x20000):
        sim.flash.program(a, b"\x00")
    xfer(sim, b"\x06")
    xfer(sim, cmd(0x20, 0x1234))  # any address inside the sector erases the sector
    wait_ready(sim, 100)
    assert sim.flash.read(0x1000, 1) == b"\xff" and sim.flash.read(0x0FFF, 1) == b"\x00"
    xfer(sim, b"\x06")
    xfer(sim, cmd(0x20, 0) + b"\x00")  # CS not raised right after the address: not executed
    assert sr(sim) == 0x02 and sim.flash.read(0x0FFF, 1) == b"\x00"
    xfer(sim, cmd(0xD8, 0x8000))  # 64 KB block erase (WEL still set)
    t = wait_ready(sim, 1000)
    assert TIMING_US["block_erase_typ"] - 1000 <= t <= TIMING_US["block_erase_typ"] + 2000
    assert sim.flash.read(0, 0x10000) == b"\xff" * 0x10000
    assert sim.flash.read(0x10000, 1) == b"\x00"
    assert sim.flash.stats()["erases"] == 17


def check_deep_power_down():
    sim = SpiNorSim(SMALL)
    sim.flash.program(0, b"zz")
    xfer(sim, b"\xb9")
    assert sim.deep_power_down
    assert xfer(sim, b"\x9f", 3) == b"\xff\xff\xff"
    assert xfer(sim, b"\x05", 1) == b"\xff"
    assert xfer(sim, cmd(0x03, 0), 2) == b"\xff\xff"
    xfer(sim, b"\x06")
    xfer(sim, b"\x66")
    xfer(sim, b"\x99")
    assert sim.deep_power_down
    xfer(sim, b"\xab")
    assert not sim.deep_power_down
    # tRES1: the chip needs 3 us before it listens again.
    assert xfer(sim, b"\x9f", 3) == b"\xff\xff\xff"
    sim.sleep_us(3)
    assert xfer(sim, b"\x9f", 3) == sim.chip["jedec_id"]
    assert sr(sim) == 0  # the WREN sent during power-down was ignored
    assert xfer(sim, cmd(0x03, 0), 2) == b"zz"
    # AB with dummy bytes outside power-down just reads the legacy id.
    assert xfer(sim, b"\xab\x00\x00\x00", 1) == bytes((sim.chip["legacy_id"],))


def check_reset():
    sim = SpiNorSim(SMALL)
    xfer(sim, b"\x06")
    xfer(sim, b"\x99")  # reset without reset-enable: nothing
    assert sr(sim) == 0x02
    xfer(sim, b"\x66")
    xfer(sim, b"\x05", 1)  # anything between 66 and 99 cancels the enable
    xfer(sim, b"\x99")
    assert sr(sim) == 0x02
    xfer(sim, b"\x66")
    xfer(sim, b"\x99")
    assert xfer(sim, b"\x9f", 3) == b"\xff\xff\xff"  # tRST: deaf for 30 us
    sim.sleep_us(30)
    assert sr(sim) == 0
    assert xfer(sim, b"\x9f", 3) == sim.chip["jedec_id"]


def check_missing_and_stuck():
    for level in (0xFF, 0x00):
        sim = SpiNorSim(SMALL)
        sim.miso_stuck = level
        assert xfer(sim, b"\x9f", 3) == bytes((level,)) * 3
        assert xfer(sim, b"\x05", 1) == bytes((level,))
        xfer(sim, b"\x06")
        xfer(sim, cmd(0x02, 0) + b"\x00")
        sim.miso_stuck = None
        assert sr(sim) == 0 and sim.flash.read(0, 1) == b"\xff"
    sim = SpiNorSim(SMALL)
    sim.stuck_busy = True
    sim.sleep_us(10000000)
    assert sr(sim) & 1
    assert xfer(sim, b"\x9f", 3) == b"\xff\xff\xff"
    sim.stuck_busy = False
    sim.wren_ignored = True
    xfer(sim, b"\x06")
    assert sr(sim) == 0


def check_clock_and_strays():
    sim = SpiNorSim(SMALL, clock_hz=50000000)
    t0 = sim.clock_ns
    xfer(sim, cmd(0x0B, 0) + b"\x00", 4096)
    assert sim.clock_ns - t0 == (5 + 4096) * 160  # 8 clocks of 20 ns per byte
    sim.spi.write(b"\x06")  # CS high: the chip does not listen
    assert sr(sim) == 0 and sim.stats()["stray_bytes"] == 1
    sim.sleep_us(7)
    assert sim.ticks_us() == sim.clock_us


def check_power_cut():
    sim = SpiNorSim(SMALL)
    sim.flash.arm_cut(1)
    xfer(sim, b"\x06")
    sim.cs(0)
    sim.spi.write(cmd(0x02, 0) + bytes(64))
    with raises(PowerCut):
        sim.cs(1)
    sim.power_on()
    assert sr(sim) == 0
    program(sim, 0x100, b"ok")
    assert xfer(sim, cmd(0x03, 0x100), 2) == b"ok"


def check_models_geometry():
    names = [c["name"] for c in chips.CHIPS]
    assert names == ["W25Q16JV", "W25Q64JV", "W25Q128JV"]
    for c in chips.CHIPS:
        assert c["size"] == 1 << c["jedec_id"][2]  # capacity byte = log2(size)
        assert c["page_size"] == 256 and c["sector_size"] == 4096 and c["block_size"] == 65536
        assert c["sfdp"][:4] == b"SFDP"
        assert chips.by_id(c["jedec_id"]) is c and chips.by_name(c["name"]) is c
