"""The app's RAM budget on a board-sized heap (issue 9 item 4), on the 32-bit unix port.

The meter boots on the sim board (flash image in a file: nothing of the chip on the heap) and meters
10 simulated minutes with the heap an ESP32-WROOM without PSRAM (110K) and an RP2040 (180K) has. Its
modules are .mpy files for the port's architecture in a ROMFS image, whose bytecode runs in place as on
a board with the app in ROMFS (or frozen); the image itself stands in for flash and is kept out of the
board's heap, as are the sim board's stand-ins for hardware (the simulated NOR chip behind the real
SpiNor driver, the supply, the grid module: a board has chips there, not heap), built before anything is
measured (host_tools/harness/memory_bench.py: the usable heap is exactly what a plain
`-X heapsize=110K` run has). Checked: no MemoryError, no fault, every checkpoint stored, the heap flat
from minute to minute. `make bench-memory` prints the figures (and the same with .mpy files copied to
RAM, which needs more than either board has).
"""
import os

import pytest
from meterctl import bench_memory as bm
from mpplugin import LANE32_HINT, MICROPYTHON32, MicroPythonError, lane32_available, run_micropython

SECONDS = 600
FLAT_BYTES = 256  # live heap from minute 2 on may wobble by a few GC blocks, never grow


@pytest.fixture(scope="module")
def romfs_app(tmp_path_factory):
    if not lane32_available():
        if os.environ.get("CI") == "true":
            pytest.fail(LANE32_HINT + "; CI=true requires it")
        pytest.skip(LANE32_HINT)
    tmp = tmp_path_factory.mktemp("romfs_app")
    modules = bm.import_closure()
    tree = tmp / "mpy"
    bm.compile_tree(modules, bm.unix_arch(MICROPYTHON32), tree)
    image = tmp / "app.romfs"
    bm.build_romfs(tree, image)
    return modules, image


@pytest.mark.parametrize("heap", ["110K", "180K"])
def test_app_boots_and_meters_ten_minutes_in_a_board_heap(romfs_app, heap, tmp_path):
    modules, image = romfs_app
    board_heap = bm.usable_heap(MICROPYTHON32, heap)
    args = bm.driver_args(SECONDS, modules, (image, board_heap))
    try:
        out = run_micropython(args, heapsize=bm.romfs_heapsize(heap, image.stat().st_size), timeout=300,
                              env=bm.driver_env(tmp_path), cwd=str(tmp_path), binary=MICROPYTHON32)
    except MicroPythonError as e:
        pytest.fail("the app did not run to its end in a %s heap:\n%s" % (heap, str(e)[-3000:]),
                    pytrace=False)
    stages, res = bm.parse(out)
    assert res is not None, out[-3000:]
    print("heap %s: stages %s\nresult %s" % (heap, stages, res))
    assert abs(res["heap_total"] - board_heap) <= 64          # the board's heap, not the image's
    assert res["faults"] == 0 and res["refusal"] is None, res["last_fault"]
    assert res["t_s"] == SECONDS and res["windows"] >= SECONDS - 1
    assert res["energy_wh"] > 0
    # boot event + a checkpoint every simulated minute (+ the final one), all in the journal
    assert res["records_stored"] >= 1 + SECONDS // 60 and res["journal_records"] == res["records_stored"]
    minutes = res["minutes"]
    assert len(minutes) >= SECONDS // 60 - 1  # a sample per simulated minute after the first record
    assert max(minutes[1:]) - min(minutes[1:]) <= FLAT_BYTES, minutes
    assert res["peak"] <= board_heap and res["largest_free"] > 1024
    names = [n for n, _ in stages]
    for name in ("stores mounted", "engine built", "booted", "first window", "first record"):
        assert name in names
