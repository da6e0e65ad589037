"""NOR simulator checks shared by the CPython (test_nor.py) and MicroPython (mpt_nor.py) suites."""
from mptest import raises
from sim.nor import TIMING_US, NorFlash, PowerCut


def check_program_only_clears_bits():
    f = NorFlash(8192)
    f.program(0, b"\xf0\x0f")
    f.program(0, b"\x3c\x3c")
    assert f.read(0, 3) == b"\x30\x0c\xff"


def check_erase_sets_ff_and_counts():
    f = NorFlash(8192)
    f.program(4096, b"\x00" * 16)
    f.erase_sector(4096)
    assert f.read(4096, 16) == b"\xff" * 16
    s = f.stats()
    assert s["erase_counts"] == [0, 1] and s["erases"] == 1
    assert s["busy_us"] == TIMING_US["sector_erase_typ"] + 30 + 2.5 * 15


def check_alignment_and_bounds():
    f = NorFlash(8192)
    with raises(ValueError, "page boundary"):
        f.program(250, b"\x00" * 10)
    with raises(ValueError, "aligned"):
        f.erase_sector(100)
    with raises(ValueError, "outside"):
        f.read(8190, 4)
    with raises(ValueError, "outside"):
        f.program(8192, b"\x00")
    f.program(246, b"\x00" * 10)  # ends exactly at the boundary: fine


def check_cut_tears_the_nth_operation():
    f = NorFlash(8192, seed=3)
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


def torn_program_stats(seeds):
    """Over many seeds, tear a 64-byte program: returns (prefix lengths, count of partial bytes).
    Also checks the shape: programmed prefix, at most one partial byte, then untouched bytes."""
    prefixes = []
    partial = 0
    for seed in range(seeds):
        f = NorFlash(4096, seed=seed)
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


def torn_erase_mix(seeds):
    mixed = 0
    for seed in range(seeds):
        f = NorFlash(4096, seed=seed)
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


def check_wear_out_noticed_by_read_back():
    f = NorFlash(8192, seed=1, endurance=20)
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


def check_deterministic_given_seed():
    def run(seed):
        f = NorFlash(8192, seed=seed)
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
    f = NorFlash(8192, path=path)
    f.program(300, b"hello")
    f.close()
    g = NorFlash(8192, path=path)
    assert g.read(300, 5) == b"hello"
    g.close()
    with raises(ValueError, "expected"):
        NorFlash(16384, path=path)
