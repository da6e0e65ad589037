# Kernels on the MicroPython unix port: viper == plain twin, 32-bit bound proof, no allocation.
import math
from array import array

import micropython
from sim.rng import XorShift32 as Rng
from umeter.metering import kernels as K
from umeter.metering import kernels_ref as R

HEAPSIZE = "8M"
I32 = 1 << 31


def fresh(bits, n, stop=K.NEVER):
    st = K.new_state(bits, n)
    st[K.STOP] = stop
    return st


def run_both(buf, st_v, st_r):
    nv = K.block(buf, st_v)
    nr = R.block_ref(buf, st_r)
    assert nv == nr, (nv, nr)
    assert list(st_v) == list(st_r), (list(st_v), list(st_r))


def sine_block(n, bits, amp, period, phase, rng=None, noise=0):
    mid = 1 << (bits - 1)
    out = array("H", bytes(4 * n))
    for k in range(n):
        a = math.sin(2 * math.pi * (k + phase) / period)
        nv = (rng.below(2 * noise + 1) - noise) if rng else 0
        out[2 * k] = max(0, min((1 << bits) - 1, int(mid + amp * a + nv)))
        ia = amp * 0.3 * math.cos(2 * math.pi * k / period)
        out[2 * k + 1] = max(0, min((1 << bits) - 1, int(mid + ia)))
    return out


def test_viper_equals_twin_on_random_blocks():
    rng = Rng(12345)
    for bits in (8, 12, 14, 16):
        for n in (1, 7, 200, 1000):
            top = 1 << bits
            st_v = fresh(bits, n)
            st_r = fresh(bits, n)
            for rep in range(3):  # chained blocks carry VPREV and ARMED
                buf = array("H", [rng.below(top) for _ in range(2 * n)])
                stop = rng.below(n + 2)
                st_v[K.STOP] = st_r[K.STOP] = stop if stop <= n else K.NEVER
                run_both(buf, st_v, st_r)


def test_viper_equals_twin_on_sines_with_snapshots():
    rng = Rng(7)
    for bits, n, period in ((12, 200, 80), (16, 1000, 66.7), (12, 4000, 88.9)):
        st_v = fresh(bits, n)
        st_r = fresh(bits, n)
        for rep in range(4):
            buf = sine_block(n, bits, 0.8 * (1 << (bits - 1)), period, rep * n, rng, noise=3)
            st_v[K.STOP] = st_r[K.STOP] = (rep * 37) % n
            run_both(buf, st_v, st_r)
            assert st_v[K.NC] >= n // int(period) - 1
            assert st_v[K.SNAP] == 1


def test_viper_equals_twin_on_full_scale_extremes():
    for bits in (12, 16):
        top = (1 << bits) - 1
        n = K.MAX_PAIRS
        patterns = ([0, 0], [top, top], [0, top], [top, 0])
        for pat in patterns:
            buf = array("H", pat * n)
            st_v, st_r = fresh(bits, n), fresh(bits, n)
            run_both(buf, st_v, st_r)
        # alternating full-scale extremes: V toggles 0/top, I follows and opposes it
        for pat in ([0, 0, top, top], [0, top, top, 0]):
            buf = array("H", pat * (n // 2))
            st_v, st_r = fresh(bits, n, 5), fresh(bits, n, 5)
            run_both(buf, st_v, st_r)
            assert st_v[K.NC] == n // 2 - 1 or st_v[K.NC] == n // 2


def exact_sums(buf, n, mid, vprev_raw):
    sv = si = vv = ii = p0 = p1 = 0
    vp = vprev_raw - mid
    for k in range(n):
        v = buf[2 * k] - mid
        i = buf[2 * k + 1] - mid
        sv += v
        si += i
        vv += v * v
        ii += i * i
        p0 += v * i
        p1 += vp * i
        vp = v
    return (sv, si, vv, ii, p0, p1)


def checked_twin(buf, n, mid, chunk, vprev_raw):
    """An independent re-implementation of the documented accumulation that asserts every
    intermediate value fits in a signed 32-bit word (what the target's viper ints are)."""
    worst = [0]

    def chk(x):
        assert -I32 <= x < I32, x
        if abs(x) > worst[0]:
            worst[0] = abs(x)
        return x

    lo = [0, 0, 0, 0]
    hi = [0, 0, 0, 0]
    sv = si = 0
    vp = chk(vprev_raw - mid)
    k = 0
    while k < n:
        e = min(n, k + chunk)
        while k < e:
            v = chk(buf[2 * k] - mid)
            i = chk(buf[2 * k + 1] - mid)
            sv = chk(sv + v)
            si = chk(si + i)
            for j, term in enumerate((chk(v * v), chk(i * i), chk(v * i), chk(vp * i))):
                lo[j] = chk(lo[j] + term)
            vp = v
            k += 1
        for j in range(4):
            hi[j] = chk(hi[j] + (lo[j] >> K.LO_BITS))
            lo[j] = chk(lo[j] & K.LO_MASK)
    return (sv, si) + tuple((hi[j] << K.LO_BITS) + lo[j] for j in range(4)), worst[0]


def test_32_bit_bounds_at_full_scale_and_maximum_block():
    # the documented arithmetic
    for bits in range(8, 17):
        c = K.chunk_for(bits)
        term = 1 << (2 * bits - 2)
        assert c >= 1
        assert (1 << K.LO_BITS) + c * term <= I32 - 1, bits
        assert -c * term >= -I32
        if c < K.MAX_PAIRS:
            assert (1 << K.LO_BITS) + (c + 1) * term > I32 - 1, "chunk not the largest safe one"
    assert K.chunk_for(16) == 1 and K.chunk_for(12) == 383
    assert K.MAX_PAIRS * (1 << 15) <= 1 << 29  # |SV|, |SI|
    # every intermediate stays in int32 on worst-case blocks of maximum length, and the split
    # accumulators (and the viper kernel's results) equal the exact sums
    worst_seen = 0
    for bits in (12, 16):
        top = (1 << bits) - 1
        mid = 1 << (bits - 1)
        n = K.MAX_PAIRS
        for pat in ([0, 0], [top, 0], [0, top], [0, 0, top, top], [top, 0, 0, top]):
            buf = array("H", pat * (2 * n // len(pat)))
            for vprev in (0, top):
                exact = exact_sums(buf, n, mid, vprev)
                got, worst = checked_twin(buf, n, mid, K.chunk_for(bits, n), vprev)
                assert got == exact
                worst_seen = max(worst_seen, worst)
                st = fresh(bits, n)
                st[K.VPREV] = vprev
                K.block(buf, st)
                assert K.split_value(st, K.SV) == exact
                for idx in (K.SV, K.SI, K.VVH, K.IIH, K.P0H, K.P1H):
                    assert -I32 <= st[idx] < I32
    assert worst_seen > 1 << 30  # the proof really exercised the top of the range
    print("largest intermediate magnitude", worst_seen, "of", I32 - 1)


def test_kernel_does_not_allocate():
    buf = sine_block(1000, 12, 1500, 80, 0)
    st = fresh(12, 1000, 100)
    K.block(buf, st)  # warm up (first call may intern things)
    locked = False
    micropython.heap_lock()
    try:
        for _ in range(10):
            K.block(buf, st)
        try:
            bytearray(16)
        except MemoryError:  # the lock is real: any allocation fails
            locked = True
    finally:
        micropython.heap_unlock()
    assert locked
    assert st[K.SNAP] == 1


def test_crossings_and_subsample_position():
    # exact rising crossings of a clean sine with a period of 80 samples, phase shifted by 0.3
    n, period, bits = 800, 80, 16
    mid = 1 << (bits - 1)
    buf = array("H", bytes(4 * n))
    shift = 0.3
    for k in range(n):
        buf[2 * k] = int(mid + 20000 * math.sin(2 * math.pi * (k - shift) / period) + 0.5)
        buf[2 * k + 1] = mid
    st = fresh(bits, n, 250)
    nc = K.block(buf, st)
    # sample 0 is only 471 LSB below zero, above the arming level (mid - 512): the crossing at
    # 0.3 is not armed; the next ones at 80.3, 160.3, ..., 720.3 are (9 of them)
    assert nc == 9
    ts = []
    for at in (K.FC_J, K.LC_J, K.SNAP_J):
        j, vb, va = st[at], st[at + 1], st[at + 2]
        ts.append(j - 1 + (st[K.ZC] - vb) / (va - vb))
    assert abs(ts[0] - 80.3) < 0.002, ts
    assert abs(ts[1] - 720.3) < 0.002, ts
    assert abs(ts[2] - 320.3) < 0.002, ts  # the first crossing at or after index 250
    assert st[K.SNAP_NC] == 3  # 80.3, 160.3, 240.3 came before it
    # the snapshot holds the sums of samples 0..320 exactly
    exact = exact_sums(buf, st[K.SNAP_J], mid, mid)
    assert K.split_value(st, K.SNAP_BASE) == exact


def test_viper_equals_twin_with_codes_beyond_the_width_and_fold():
    # 16-bit codes into 8/12/14-bit states: clipped and counted alike; fold() books them alike
    rng = Rng(4242)
    for bits in (8, 12, 14, 16):
        for n in (1, 33, 500):
            st_v, st_r = fresh(bits, n), fresh(bits, n)
            st_v[K.ZC] = st_r[K.ZC] = 1 << (bits - 1)
            for rep in range(6):
                buf = array("H", [rng.below(1 << 16) if rng.below(3) else rng.below(1 << bits)
                                  for _ in range(2 * n)])
                stop = rng.below(n + 2)
                st_v[K.STOP] = st_r[K.STOP] = stop if stop <= n else K.NEVER
                run_both(buf, st_v, st_r)
                end = rng.below(2)
                assert K.fold(st_v, end) == R.fold_ref(st_r, end)
                assert list(st_v) == list(st_r)
            top = (1 << bits) - 1
            # the block's counts cover all of it (the snapshot has its own)
            assert st_v[K.OVER] == sum(1 for c in buf if c > top)
            rails = [1 if c >= top or c == 0 else 0 for c in buf]
            assert st_v[K.SATV] == sum(rails[k] for k in range(0, 2 * n, 2))
            assert st_v[K.SATI] == sum(rails[k] for k in range(1, 2 * n, 2))


def test_fold_keeps_window_halves_small_over_the_longest_window():
    # MAX_WINDOW samples of the worst case for every sum at 16 bits, in maximum blocks: the window's
    # halves stay small ints (< 2**30, what a 31-bit target reads without allocating), and exact
    from umeter.metering.engine import MAX_WINDOW
    n = K.MAX_PAIRS
    for pat in ([65535, 0], [0, 65535], [0, 0], [65535, 65535]):
        st = fresh(16, n)
        st[K.VPREV] = pat[0]
        buf = array("H", pat * n)
        blocks = MAX_WINDOW // n
        for _ in range(blocks):
            K.block(buf, st)
            K.fold(st, 0)
        for k in range(K.W_BASE, K.W_BASE + 12):
            assert -(1 << 30) <= st[k] < 1 << 30, (k, st[k])
        v, i = pat[0] - 32768, pat[1] - 32768
        total = blocks * n
        exact = [total * v, total * i, total * v * v, total * i * i, total * v * i, total * v * i]
        assert K.window_value(st, K.W_BASE) == exact
        assert st[K.W_BASE + 12] == total and st[K.W_BASE + 13] == total  # every sample on a rail
        K.block(buf, st)
        assert K.fold(st, 1) == 1  # ending with the block: CW gets it all, W starts empty
        assert K.window_value(st, K.CW_BASE) == [x * (blocks + 1) // blocks for x in exact]
        assert K.window_value(st, K.W_BASE) == [0] * 6


def test_fold_does_not_allocate():
    buf = sine_block(1000, 12, 1500, 80, 0)
    st = fresh(12, 1000, 100)
    K.block(buf, st)
    K.fold(st, 0)
    micropython.heap_lock()
    try:
        for k in range(10):
            K.block(buf, st)
            K.fold(st, k & 1)
    finally:
        micropython.heap_unlock()
    assert st[K.SNAP] == 1
