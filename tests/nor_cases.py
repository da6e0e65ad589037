"""NOR simulator checks shared by the CPython (test_nor.py) and MicroPython (mpt_nor.py) suites.
Each check takes `make` (NorFlash by default: image in RAM); file_only(dir) gives NorFlash with the image
in a file only, so both image kinds pass the same checks."""
import os

from mptest import raises
from sim.nor import TIMING_US, NorFlash, PowerCut


def check_program_only_clears_bits(make=NorFlash):
    f = make(8192)
    f.program(0, b"\xf0\x0f")
    f.program(0, b"\x3c\x3c")
    assert f.read(0, 3) == b"\x30\x0c\xff"


def check_erase_sets_ff_and_counts(make=NorFlash):
    f = make(8192)
    f.program(4096, b"\x00" * 16)
    f.erase_sector(4096)
    assert f.read(4096, 16) == b"\xff" * 16
    s = f.stats()
    assert s["erase_counts"] == [0, 1] and s["erases"] == 1
    assert s["busy_us"] == TIMING_US["sector_erase_typ"] + 30 + 2.5 * 15


def check_alignment_and_bounds(make=NorFlash):
    f = make(8192)
    with raises(ValueError, "page boundary"):
        f.program(250, b"\x00" * 10)
    with raises(ValueError, "aligned"):
        f.erase_sector(100)
    with raises(ValueError, "outside"):
        f.read(8190, 4)
    with raises(ValueError, "outside"):
        f.program(8192, b"\x00")
    f.program(246, b"\x00" * 10)  # ends exactly at the boundary: fine


def check_cut_tears_the_nth_operation(make=NorFlash):
    f = make(8192, seed=3)
    f.arm_cut(2)
    f.program(0, b"\x00" * 4)            # first: completes
    with raises(PowerCut):
        f.program(256, b"\x00" * 200)    # second: torn
    with raises(PowerCut):
        f.read(0, 1)                     # dead until power_on
    f.power_on()
    assert f.read(0, 4) == b"\x00" * 4
    torn = f.read(256, 200)
    # A prefix of zeros, then at most one partially programmed byte, then erased bytes.
    i = 0
    while i < 200 and torn[i] == 0:
        i += 1
    rest = torn[i + 1:] if i < 200 else b""
    assert rest == b"\xff" * len(rest)


def torn_program_stats(seeds, make=NorFlash):
    """Over many seeds, tear a 64-byte program: returns (prefix lengths, count of partial bytes).
    Also checks the shape: programmed prefix, at most one partial byte, then untouched bytes."""
    prefixes = []
    partial = 0
    for seed in range(seeds):
        f = make(4096, seed=seed)
        f.arm_cut(1)
        try:
            f.program(0, b"\x00" * 64)
        except PowerCut:
            pass
        else:
            raise AssertionError("armed cut did not fire")
        f.power_on()
        data = f.read(0, 64)
        zeros = 0
        while zeros < 64 and data[zeros] == 0:
            zeros += 1
        if zeros < 64:
            assert data[zeros + 1:] == b"\xff" * (63 - zeros)
            if data[zeros] != 0xFF:
                partial += 1
        prefixes.append(zeros)
    return prefixes, partial


def torn_erase_mix(seeds, make=NorFlash):
    mixed = 0
    for seed in range(seeds):
        f = make(4096, seed=seed)
        f.program(0, b"\x00" * 256)
        f.arm_cut(1)
        try:
            f.erase_sector(0)
        except PowerCut:
            pass
        f.power_on()
        data = f.read(0, 256)
        for b in data:
            assert b in (0x00, 0xFF)  # each byte erased or old
        ff = data.count(b"\xff") if hasattr(data, "count") else sum(1 for b in data if b == 0xFF)
        if 0 < ff < 256:
            mixed += 1
    return mixed


def check_wear_out_noticed_by_read_back(make=NorFlash):
    f = make(8192, seed=1, endurance=20)
    failures = 0
    for _ in range(200):
        f.erase_sector(0)
        if f.read(0, 4096) != b"\xff" * 4096:
            failures += 1
            continue
        f.program(0, b"\x00" * 256)
        if f.read(0, 256) != b"\x00" * 256:
            failures += 1
    assert failures > 0
    f.erase_sector(4096)  # the other sector is still healthy
    assert f.read(4096, 4096) == b"\xff" * 4096


def check_deterministic_given_seed(make=NorFlash):
    def run(seed):
        f = make(8192, seed=seed)
        f.program(0, b"\x00" * 256)
        f.arm_cut(1)
        try:
            f.erase_sector(0)
        except PowerCut:
            pass
        f.power_on()
        return f.read(0, 256)

    assert run(7) == run(7)
    assert run(7) != run(8)


def check_file_backed(path):
    for in_ram in (True, False):
        f = NorFlash(8192, path=path, in_ram=in_ram)
        f.program(300, b"hello")
        f.erase_sector(4096)
        f.close()
        g = NorFlash(8192, path=path, in_ram=in_ram)
        assert g.read(300, 5) == b"hello" and g.read(4096, 4) == b"\xff" * 4
        g.close()
        with raises(ValueError, "expected"):
            NorFlash(16384, path=path, in_ram=in_ram)
        os.remove(path)
    with raises(ValueError, "needs a path"):
        NorFlash(8192, in_ram=False)


def file_only(directory):
    """A NorFlash factory whose images live in files under `directory` only (nothing in RAM)."""
    count = [0]

    def make(size, **kw):
        count[0] += 1
        path = "%s/nor%d.img" % (directory, count[0])
        try:
            os.remove(path)
        except OSError:
            pass
        return NorFlash(size, path=path, **kw)

    return make


def check_file_image_behaves_like_ram(directory, ops=400):
    """The same random programs, erases and power cuts on a RAM image and a file-only image (same seed):
    byte-identical images and identical stats, so torn writes and wear are modelled the same way."""
    from sim.rng import XorShift32

    ram = NorFlash(4 * 4096, seed=5, endurance=8)
    disk = file_only(directory)(4 * 4096, seed=5, endurance=8)
    rng = XorShift32(99)
    cuts = 0
    for _ in range(ops):
        if rng.below(10) == 0:
            cut = 1 + rng.below(3)
            for f in (ram, disk):
                f.arm_cut(cut)
        op = rng.below(8)
        addr = rng.below(4 * 4096)
        n = 1 + rng.below(64)
        data = bytes(rng.fill(n))
        outcome = []
        for f in (ram, disk):
            try:
                if op == 0:
                    f.erase_sector(addr - addr % 4096)
                else:
                    f.program(addr, data[:256 - addr % 256][:4 * 4096 - addr])
                outcome.append("ok")
            except PowerCut:
                f.power_on()
                outcome.append("cut")
        assert outcome[0] == outcome[1]
        cuts += outcome[0] == "cut"
    assert cuts > ops // 40 and max(ram.stats()["erase_counts"]) > 8  # tears and wear-out both happened
    assert ram.read(0, ram.size) == disk.read(0, disk.size)
    assert ram.stats() == disk.stats()
    buf = bytearray(100)
    disk.readinto(4000, buf)
    assert bytes(buf) == ram.read(4000, 100)
    disk.close()
