# Engine memory on the MicroPython unix port, both lanes: Engine.feed_block() (the per-block half of
# feed) allocates nothing, proved under micropython.heap_lock() over a minute and more of blocks,
# with meter time and registers already past the 31-bit small-int range; close_window() (the
# per-window half) allocates a bounded amount, measured here (the figures PROFILE.md quotes).
import gc
import math
import sys
from array import array

import micropython
from sim.grid import Grid
from umeter.metering import obis
from umeter.metering.engine import Engine

HEAPSIZE = "1M"  # small: gc.mem_alloc() walks the whole heap on every call
# bytes one close_window() may allocate (PROFILE.md "Memory" has the measured figures): a plain
# window, and one that also ends a load-profile interval (builds its record). The 64-bit port's
# heap blocks and objects are twice the size of a 32-bit target's.
WORD64 = sys.maxsize > 1 << 32
CLOSE_BOUND = 4608 if WORD64 else 3328
BOUNDARY_BOUND = 6144 if WORD64 else 5120


def cycle_blocks(scenario, seconds=1):
    """`seconds` of blocks of whole mains cycles (400 pairs = 5 cycles at 4 kHz, 50 Hz): fed in a
    loop they make a continuous waveform without generating samples in the timed part."""
    sc = {"block_pairs": 400, "noise_lsb": 2, "skew_us": 125}
    sc.update(scenario)
    g = Grid(sc)
    out = []
    for _ in range(seconds * g.rate_hz // g.block_pairs):
        out.append(array("H", g.read_block()))
    return out


def widen(blocks, factor):
    """The same waveform as codes `factor` times wider around mid-scale, clamped to 16 bits: what a
    16-bit ADC would give a 12-bit engine configured for the wrong width."""
    out = []
    for b in blocks:
        w = array("H", b)
        for k in range(len(w)):
            c = 2048 + (w[k] - 2048) * factor
            w[k] = 0 if c < 0 else (65535 if c > 65535 else c)
        out.append(w)
    return out


def run_locked(eng, blocks, seconds, stats):
    """Feed `seconds` of the looping blocks: every feed_block() under heap_lock(), every
    close_window() measured with the collector off. Returns the windows closed."""
    n_blocks = seconds * eng.rate_hz // eng.block_pairs
    closed = 0
    for k in range(n_blocks):
        buf = blocks[k % len(blocks)]
        micropython.heap_lock()
        try:
            ended = eng.feed_block(buf)
        finally:
            micropython.heap_unlock()
        if ended:
            recs = len(eng.records)
            gc.collect()
            gc.disable()
            before = gc.mem_alloc()
            eng.close_window()
            used = gc.mem_alloc() - before
            gc.enable()
            key = "boundary" if len(eng.records) > recs else "window"
            stats[key] = max(stats.get(key, 0), used)
            closed += 1
    return closed


def test_feed_block_allocates_nothing_for_minutes_of_blocks():
    # the lock is real: any allocation under it fails
    micropython.heap_lock()
    try:
        bytearray(16)
        locked = False
    except MemoryError:
        locked = True
    finally:
        micropython.heap_unlock()
    assert locked
    normal = cycle_blocks({"irms": 12.0, "phase_deg": 30.0})
    eng = Engine(4000, 12, 400, skew_us=125, profile_min=1, demand_s=15)
    # restored 20 years in: meter time and every register far beyond small ints on both lanes
    t0 = 20 * 31557600 * 4000 - 30 * 4000
    big = [(20000 * 20 * 8766 * 1000) << 24, 3 << 40, (1 << 62) + 12345, 7]
    eng.restore([1, 24, t0] + big)
    stats = {}
    closed = run_locked(eng, normal, 70, stats)  # crosses a profile boundary on the way
    assert closed >= 69 and eng.windows == closed
    assert eng.t == t0 + 70 * 4000
    assert eng.register_fu(obis.A_IMPORT) > big[0] and eng.register_fu(obis.R_EXPORT) == big[3]
    assert not eng.status["saturated"] and eng.saturated_windows == 0
    assert abs(eng.status[obis.P_IMPORT] - 230 * 12 * math.cos(math.radians(30))) < 5
    # no voltage: windows end by time-out, not on crossings
    flat = [array("H", [2048, 2048] * 400)]
    closed = run_locked(eng, flat, 10, stats)
    assert closed >= 7 and not eng.status["aligned"]
    # 16-bit codes into the 12-bit engine: clipped and counted, still nothing per block
    wide = widen(normal, 16)
    closed = run_locked(eng, wide, 5, stats)
    assert closed >= 4 and eng.status["saturated"] and eng.status["clipped"] > 0
    recs = len(eng.records)
    assert recs >= 1
    print("close_window() allocates at most %d B (window), %d B (ending a profile interval)"
          % (stats["window"], stats.get("boundary", 0)))
    assert stats["window"] <= CLOSE_BOUND, stats
    assert stats.get("boundary", 0) <= BOUNDARY_BOUND, stats


def test_feed_allocates_nothing_on_blocks_that_close_no_window():
    # the app calls feed(): on a block where no window ends it is feed_block() alone. With the
    # collector off, any allocation would show in mem_alloc (freed-on-return frames do not)
    blocks = cycle_blocks({"irms": 7.0, "phase_deg": -20.0})
    eng = Engine(4000, 12, 400, skew_us=125)
    eng.restore([1, 24, (1 << 31) - 4000 * 20, 1 << 60, 0, 1 << 45, 0])  # crosses 2**31 samples
    quiet = closes = 0
    gc.disable()
    for k in range(65 * 10):
        if k % 100 == 0:
            gc.enable()
            gc.collect()
            gc.disable()
        before = gc.mem_alloc()
        closed = eng.feed(blocks[k % len(blocks)])
        used = gc.mem_alloc() - before
        if closed:
            closes += 1
        else:
            assert used == 0, (k, used)
            quiet += 1
    gc.enable()
    assert eng.t > 1 << 31 and closes >= 64 and quiet >= 500
