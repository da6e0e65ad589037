# State on the MicroPython unix port: the functional checks, a power-cut torture, heap behaviour.
import gc
import os

import micropython
import state_cases
from harness import state_torture
from state_cases import RamDev
from umeter.store.state import State

HEAPSIZE = "8M"
LANE = os.getenv("MPT_LANE") or "?"


def ram(sectors):
    return RamDev(bytearray(b"\xff" * (sectors * 4096)))


def test_blank_formats_and_roundtrips():
    state_cases.check_blank_formats_and_roundtrips()


def test_limits():
    state_cases.check_limits()


def test_compaction_keeps_latest_and_spreads_wear():
    state_cases.check_compaction_keeps_latest_and_spreads_wear()


def test_full_foreign_geometry_get_into():
    state_cases.check_full_is_refused_cleanly()
    state_cases.check_foreign_device_refused_and_untouched()
    state_cases.check_geometry_mismatch_refused()
    state_cases.check_get_into()


def test_mount_cost_and_torn_put():
    state_cases.check_mount_cost_bounded()
    state_cases.check_torn_put_leaves_no_hole()


def test_corruption_and_bit_flips():
    state_cases.check_runtime_corruption_skipped(ram)
    state_cases.check_header_copy_flip_survives(ram)
    state_cases.check_cut_copy_b_finished(ram)
    assert state_cases.check_bit_flips(ram, 12) >= 1


def test_on_spi_nor_driver():
    state_cases.check_on_spi_nor_driver()


def test_silent_program_failures_keep_acknowledged_values():
    state_cases.check_silent_program_failures_keep_acknowledged_values()


def test_format_cut_never_resurrects():
    state_cases.check_format_cut_never_resurrects()


def test_power_cut_torture():
    total = 0
    for cuts, seed, kw in [(300, 21, {"sectors": 2}), (300, 22, {"sectors": 4, "sector_size": 1024,
                                                                  "nkeys": 8, "max_ops": 40})]:
        r = state_torture.run(cuts, seed=seed, **kw)
        assert r["cuts"] == cuts and r["lost"] == 0 and r["corrupt"] == 0, r
        assert r["guards_blank"] and r["cuts_in_compaction"] >= cuts // 5
        total += r["cuts"]
    print("state torture cuts on the unix port:", total)


def test_crc_matches_binascii():
    state_cases.check_crc_matches_binascii()


def test_first_format_cut_mounts():
    assert state_cases.check_first_format_cut_mounts() >= 12


def test_brownout_loop():
    state_cases.check_brownout_loop()


def test_foreign_region_refused_untouched():
    state_cases.check_foreign_regions_refused_untouched()


def test_power_cut_sweep_from_first_format():
    cuts = state_cases.check_power_cut_sweep([(2, 1024, 0), (3, 512, 2)])
    print("state sweep cuts on", LANE, ":", cuts)


def test_get_into_does_not_allocate():
    state_cases.check_get_into_allocation_free(micropython.heap_lock, micropython.heap_unlock)
    dev = ram(2)
    st = State(dev)
    st.put(b"regs", b"\x11" * 48)
    st.put(b"cfg", b"c" * 200)
    buf = bytearray(48)
    st.get_into(b"regs", buf)                  # warm up
    micropython.heap_lock()
    try:
        n = st.get_into(b"regs", buf)
        missing = st.get_into(b"none", buf)
    finally:
        micropython.heap_unlock()
    assert n == 48 and buf == b"\x11" * 48 and missing == -1


def _alloc(f):
    gc.collect()
    gc.disable()
    before = gc.mem_alloc()
    f()
    after = gc.mem_alloc()
    gc.enable()
    return after - before


def test_put_allocation_bound_equal_on_both_lanes():
    figures = state_cases.check_put_allocation_bound(_alloc)
    print("put allocation on", LANE, "(bytes per put by value length):", figures)


def test_get_and_put_allocate_no_copies():
    dev = ram(3)
    st = State(dev)
    value = b"v" * 1000
    st.put(b"big", value)
    st.get(b"big")
    # get: the returned value (one read by the device) and nothing that grows with it elsewhere.
    used = _alloc(lambda: st.get(b"big"))
    print("get of a 1000-byte value allocates", used, "bytes on", LANE)
    assert used <= 2 * 1000 + 128              # RamDev.read: one slice plus the bytes object
    # put: a few memoryviews when the data spans pages, never a copy of the value, never an int
    # object (revision 1: 256 B on 64-bit, 416 B on 32-bit, where its CRCs were heap ints).
    used = _alloc(lambda: st.put(b"big", value))
    print("put of a 1000-byte value allocates", used, "bytes on", LANE)
    assert used <= 224
    assert State(dev).get(b"big") == value
