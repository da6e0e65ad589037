# The app's RAM budget on the MicroPython unix port (`make bench-memory`, tests/test_memory_budget.py).
#   micropython -X heapsize=110K memory_bench.py SECONDS [--romfs IMAGE BOARD_HEAP] MODULE...
# Run with the sim board's environment (UMETER_BOARD_DIR, UMETER_FLASH_IMAGE, UMETER_KEYS_DIR,
# UMETER_SIM_SPEED=0) and MICROPYPATH starting with a tree of .mpy files (meterctl.bench_memory builds it).
# --romfs: the modules come from a ROMFS image (vfs.VfsRom) instead, so their bytecode runs in place, as
# on a board whose app is in a ROMFS partition (or frozen): the image is read into the heap first (on a
# board it is memory-mapped flash), then a ballast makes the usable heap exactly BOARD_HEAP bytes; both
# are left out of every figure printed.
# MODULEs are imported one by one, dependencies first, then the meter boots on the sim board and meters
# SECONDS simulated seconds. Prints one JSON object per line:
#   {"stage": NAME, "heap": live bytes after a collection}    import:MODULE, stores mounted, ..., booted,
#                                                             first window, first record, minute N
#   {"result": ...}    peak live heap, heap at each simulated minute, largest free block at the end,
#                      records stored, windows, faults, heap total
# Live heap = gc.mem_alloc() right after gc.collect(): what the app holds, not its garbage.
import gc
import json
import sys

_peak = [0]
_outside = [0]  # bytes of the heap that stand in for flash (ROMFS image), for the sim board's hardware
#                (simulated NOR chip, supply, grid module) or pin the board's heap size


def live():
    gc.collect()
    n = gc.mem_alloc() - _outside[0]
    if n > _peak[0]:
        _peak[0] = n
    return n


def emit(obj):
    print(json.dumps(obj))


def stage(name):
    emit({"stage": name, "heap": live()})


def largest_free_block():
    """The largest bytearray that can be allocated now (binary search over attempts)."""
    gc.collect()
    lo, hi = 0, gc.mem_free()
    while lo < hi:
        mid = (lo + hi + 1) // 2
        try:
            b = bytearray(mid)
            del b
            lo = mid
        except MemoryError:
            hi = mid - 1
        gc.collect()
    return lo


def _after(cls, name, label):
    orig = getattr(cls, name)

    def wrapped(self, *args):
        r = orig(self, *args)
        stage(label)
        return r

    setattr(cls, name, wrapped)


def _before(cls, name, label):
    orig = getattr(cls, name)

    def wrapped(self, *args):
        stage(label)
        return orig(self, *args)

    setattr(cls, name, wrapped)


def hardware_stand_ins():
    """Build the sim board's stand-ins for hardware before anything is measured: the simulated NOR chip
    behind the real SpiNor driver, the supply and the grid module. A board has a flash chip, an ADC and
    a supply instead, none on its heap; the driver (umeter.hal.spi_nor) and the board module are the
    app's and are counted. Returns the heap bytes the stand-ins hold."""
    import board  # the board module itself is the app's: imported first, counted later as live heap

    gc.collect()
    before = gc.mem_alloc()
    if hasattr(board, "_flash_sim"):
        board._flash_sim()
        board.rail()
        import sim.grid  # noqa: F401
    gc.collect()
    return gc.mem_alloc() - before


def mount_romfs(path, board_heap):
    """Mount the ROMFS image at /rom (first on sys.path), build the hardware stand-ins, then pin the
    usable heap at `board_heap`; returns what must stay referenced."""
    import os
    import vfs

    gc.collect()
    before = gc.mem_alloc()
    img = bytearray(os.stat(path)[6])
    with open(path, "rb") as f:
        f.readinto(img)
    vfs.mount(vfs.VfsRom(img), "/rom")
    sys.path.insert(0, "/rom")
    gc.collect()
    mounted = gc.mem_alloc()
    stand_ins = hardware_stand_ins()
    gc.collect()
    board_module = gc.mem_alloc() - mounted - stand_ins  # the app's, so not outside
    spare = gc.mem_free() + gc.mem_alloc() - (gc.mem_alloc() - before - board_module) - board_heap
    ballast = bytearray(spare - 16) if spare > 16 else None  # 16: the ballast's own block rounding
    gc.collect()
    _outside[0] = gc.mem_alloc() - before - board_module
    return img, ballast


def main():
    args = sys.argv[1:]
    seconds = int(args.pop(0))
    keep = None
    if args and args[0] == "--romfs":
        keep = mount_romfs(args[1], int(args[2]))
        args = args[3:]
    else:
        _outside[0] = hardware_stand_ins()
    stage("start")
    for name in args:
        __import__(name)
        stage("import:" + name)
    import board
    from umeter import app

    # stage marks around the app's own start-up steps (the meter itself is unchanged)
    _after(app.Meter, "_open_stores", "stores mounted")
    _after(app.Meter, "_open_crypto", "rollback checked, sealer ready")
    _before(app.Meter, "_restore_registers", "engine built")
    meter = app.start(board, background=False)
    stage("booted")
    at_boot = meter.stored
    rate = meter.src.rate_hz
    while meter.engine.windows < 1:
        meter.step()
    stage("first window")
    while meter.stored == at_boot:
        meter.step()
    stage("first record")
    minutes = []
    t_end = seconds * rate
    while meter.engine.t < t_end:
        meter.run_samples(min(60 * rate, t_end - meter.engine.t))
        minutes.append(live())
        emit({"stage": "minute %d" % (meter.engine.t // (60 * rate)), "heap": minutes[-1]})
    meter.checkpoint()
    st = meter.status()
    j = st["journal"] or {}
    emit({"result": {
        "peak": _peak[0], "minutes": minutes, "largest_free": largest_free_block(),
        "heap_total": gc.mem_alloc() + gc.mem_free() - _outside[0], "records_stored": meter.stored,
        "journal_records": j.get("records", 0), "windows": st["windows"], "faults": st["faults"],
        "last_fault": st["last_fault"], "t_s": st["t_s"], "refusal": st["refusal"],
        "energy_wh": st["registers_wh"].get("1.8.0", 0.0), "romfs": keep is not None}})


main()
