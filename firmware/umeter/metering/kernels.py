"""Metering hot path: one pass over a block of interleaved unsigned V,I samples.

`block(buf, st)` (viper) and its plain-Python twin `kernels_ref.block_ref(buf, st)` compute, for the pairs
buf[0:2n] (n = st[N]), with v = V - mid and i = I - mid:
    SV = sum v, SI = sum i, VV = sum v*v, II = sum i*i,
    P0 = sum v[k]*i[k], P1 = sum v[k-1]*i[k]   (v[-1] is the last V of the previous block),
and the rising zero crossings of V (raw code crosses st[ZC] upwards after having been below
st[ZL] = ZC - hysteresis): count, first and last crossing of the block (index k of the first sample
at or above ZC, raw V before and after, so the sub-sample position is k-1 + (ZC-Vb)/(Va-Vb)).
Phase correction: P0 and P1 are the products of I with V and with V one sample earlier; any
interpolated V' = a*v[k] + b*v[k-1] gives sum V'*i = a*P0 + b*P1, so the engine interpolates between
adjacent samples on the sums, with weights chosen per window (exact at the fundamental).
Snapshot: at the first crossing with index >= st[STOP], every accumulator is copied (before
sample k is added, its lo half normalised) to the SNAP_* slots, so the engine can end a window on
a whole cycle inside a block in the same single pass.
Range guard: a code above st[TOP] = 2**bits - 1 (a 16-bit code fed to a 12-bit engine, a wrong
width) is clipped to TOP and counted in OVER, so it can never wrap a 32-bit accumulator; a code at
either rail (0 or TOP: the input is at or beyond the ADC's range) is counted per channel in SATV
and SATI. The counts are snapshotted with the sums.
Window sums: `fold(st, end)` (viper, twin kernels_ref.fold_ref) adds the block's results into the window
accumulators W_* (every sum as hi * 2**29 + lo, lo normalised into [0, 2**29)), and when the block
ends a window (a snapshot was taken, or end = 1: the window ends with the block) moves the ended
window's sums to CW_* and starts W_* with what follows. The engine then reads CW_* at its leisure;
nothing per block leaves the 32-bit words, so a block costs no Python int beyond small ones.

32-bit bounds (targets run viper on 32-bit machine words; literals must stay <= 0x3FFFFFFF):
    inputs   |v|, |i| <= 2**15 (16-bit ADC, mid = 2**15; 12-bit: 2**11)
    products |v*v|, |i*i|, |v*i|, |v[k-1]*i| <= 2**30 for 16 bits; 2**(2b-2) for b bits
    square/product sums are split as value = hi * 2**29 + lo. After each chunk of CHUNK samples
    lo is normalised into [0, 2**29): hi += lo >> 29; lo &= 0x1FFFFFFF. Inside a chunk
        lo in [-CHUNK * 2**(2b-2), 2**29 + CHUNK * 2**(2b-2)]
    and chunk_for(bits) picks the largest CHUNK with 2**29 + CHUNK * 2**(2b-2) <= 2**31 - 1:
        16 bits: CHUNK = 1   -> lo in [-2**30, 2**29 + 2**30 = 1610612736]
        12 bits: CHUNK = 383 -> lo in [-1606418432, 2143289344]     (2**31 - 1 = 2147483647)
    hi changes by lo >> 29 in [-4, 3] per normalisation, so |hi| <= 4 * (n + 1) <= 2**17.
    plain sums |SV|, |SI| <= n * 2**15 <= 2**29 for n <= MAX_PAIRS = 2**14.
    fold: window lo in [0, 2**29) plus a block lo in [-2**29, 2**29] (SV, SI) or [0, 2**29) stays
    in [-2**29, 2**30); tot - snap of normalised halves in (-2**30, 2**29]. A window of N samples
    has |hi| <= 2 * N + 1 (squares) and <= N / 2**14 + 1 (SV, SI): the engine bounds N by
    MAX_WINDOW = 2**22, so every window half is a small int (< 2**30) even on 31-bit targets.
    indices, counts < 2 * MAX_PAIRS. block() loads only non-negative values (viper's 32-bit load
    zero-extends on 64-bit hosts); fold() loads signed halves and sign-extends them itself.
No allocation inside a call (proved with micropython.heap_lock() in tests/mpt_kernels.py).
"""
import sys
from array import array

import micropython
from micropython import const

MAX_PAIRS = const(16384)
NEVER = const(0xFFFF)  # STOP value: never snapshot (> any index)

# State array layout (array('i', STATE_LEN)).
# Parameters, written by the engine:
N = const(0)  # pairs in this block
MID = const(1)  # ADC mid-scale code (0 V / 0 A)
CHUNK = const(2)  # samples between normalisations (chunk_for(bits))
ZC = const(3)  # raw code V must reach for a rising crossing
ZL = const(4)  # raw code V must fall below to arm the next crossing (hysteresis)
STOP = const(5)  # first index at which a crossing takes the snapshot
TOP = const(6)  # highest valid code, 2**bits - 1: above it a code is clipped and counted
# Carried from block to block (the kernel reads and writes them):
ARMED = const(7)
VPREV = const(8)  # raw last V of the previous block (clipped)
# Results:
NC = const(9)  # rising crossings in the block
SNAP = const(10)  # 1 when the snapshot was taken
SV = const(11)
SI = const(12)
VVL = const(13)
VVH = const(14)
IIL = const(15)
IIH = const(16)
P0L = const(17)
P0H = const(18)
P1L = const(19)
P1H = const(20)
SATV = const(21)  # V samples at a rail (0 or TOP) or beyond it
SATI = const(22)  # I samples likewise
OVER = const(23)  # codes above TOP (either channel), clipped to TOP
ACC_LEN = const(13)  # SV .. OVER
SNAP_BASE = const(24)  # SNAP_BASE + (SV..OVER - SV): accumulators before sample SNAP_J
SNAP_NC = const(37)  # crossings before the snapshot crossing
SNAP_J = const(38)
SNAP_VB = const(39)
SNAP_VA = const(40)
FC_J = const(41)  # first crossing of the block: index, raw V before, raw V after
FC_VB = const(42)
FC_VA = const(43)
LC_J = const(44)  # last crossing
LC_VB = const(45)
LC_VA = const(46)
# Window accumulators (fold): six sums as (lo, hi) pairs (SV, SI, VV, II, P0, P1), then SATV,
# SATI, OVER. W_BASE: the window in progress; CW_BASE: the window the last fold ended.
W_LEN = const(15)
W_BASE = const(47)
CW_BASE = const(62)
STATE_LEN = const(77)

LO_BITS = const(29)
LO_MASK = const(0x1FFFFFFF)


def chunk_for(bits, pairs=MAX_PAIRS):
    """Largest chunk keeping every split accumulator inside signed 32 bits (module docstring)."""
    term = 1 << (2 * bits - 2)
    k = ((1 << 31) - 1 - (1 << LO_BITS)) // term
    return max(1, min(k, pairs))


@micropython.viper
def block(buf, st) -> int:
    b = ptr16(buf)
    s = ptr32(st)
    n = s[N]
    mid = s[MID]
    chunk = s[CHUNK]
    zc = s[ZC]
    zl = s[ZL]
    stop = s[STOP]
    top = s[TOP]
    armed = s[ARMED]
    vb = s[VPREV]
    vp = vb - mid
    sv = 0
    si = 0
    vvl = 0
    vvh = 0
    iil = 0
    iih = 0
    p0l = 0
    p0h = 0
    p1l = 0
    p1h = 0
    satv = 0
    sati = 0
    over = 0
    nc = 0
    snapped = 0
    k = 0
    x = 0
    while k < n:
        e = k + chunk
        if e > n:
            e = n
        while k < e:
            va = b[x]
            ia = b[x + 1]
            x += 2
            if va >= top:
                satv += 1
                if va > top:
                    over += 1
                    va = top
            elif va == 0:
                satv += 1
            if ia >= top:
                sati += 1
                if ia > top:
                    over += 1
                    ia = top
            elif ia == 0:
                sati += 1
            i = ia - mid
            if armed:
                if va >= zc:
                    armed = 0
                    if nc == 0:
                        s[FC_J] = k
                        s[FC_VB] = vb
                        s[FC_VA] = va
                    s[LC_J] = k
                    s[LC_VB] = vb
                    s[LC_VA] = va
                    if k >= stop and snapped == 0:
                        snapped = 1
                        s[SNAP_BASE] = sv
                        s[SNAP_BASE + 1] = si
                        s[SNAP_BASE + 2] = vvl & LO_MASK
                        s[SNAP_BASE + 3] = vvh + (vvl >> LO_BITS)
                        s[SNAP_BASE + 4] = iil & LO_MASK
                        s[SNAP_BASE + 5] = iih + (iil >> LO_BITS)
                        s[SNAP_BASE + 6] = p0l & LO_MASK
                        s[SNAP_BASE + 7] = p0h + (p0l >> LO_BITS)
                        s[SNAP_BASE + 8] = p1l & LO_MASK
                        s[SNAP_BASE + 9] = p1h + (p1l >> LO_BITS)
                        # the counts already hold sample k, which belongs after the snapshot
                        cv = satv
                        if va == top:
                            cv -= 1
                        ci = sati
                        if ia == top or ia == 0:
                            ci -= 1
                        co = over
                        if b[x - 2] > top:
                            co -= 1
                        if b[x - 1] > top:
                            co -= 1
                        s[SNAP_BASE + 10] = cv
                        s[SNAP_BASE + 11] = ci
                        s[SNAP_BASE + 12] = co
                        s[SNAP_NC] = nc
                        s[SNAP_J] = k
                        s[SNAP_VB] = vb
                        s[SNAP_VA] = va
                    nc += 1
            elif va < zl:
                armed = 1
            v = va - mid
            sv += v
            si += i
            vvl += v * v
            iil += i * i
            p0l += v * i
            p1l += vp * i
            vp = v
            vb = va
            k += 1
        vvh += vvl >> LO_BITS
        vvl &= LO_MASK
        iih += iil >> LO_BITS
        iil &= LO_MASK
        p0h += p0l >> LO_BITS
        p0l &= LO_MASK
        p1h += p1l >> LO_BITS
        p1l &= LO_MASK
    s[ARMED] = armed
    s[VPREV] = vb
    s[NC] = nc
    s[SNAP] = snapped
    s[SV] = sv
    s[SI] = si
    s[VVL] = vvl
    s[VVH] = vvh
    s[IIL] = iil
    s[IIH] = iih
    s[P0L] = p0l
    s[P0H] = p0h
    s[P1L] = p1l
    s[P1H] = p1h
    s[SATV] = satv
    s[SATI] = sati
    s[OVER] = over
    return nc


@micropython.viper
def fold(st, end: int) -> int:
    """Book the last block() into the window accumulators (module docstring). Returns 1 when a
    window ended (its sums are then in CW_*), else 0."""
    s = ptr32(st)
    h = 1
    h <<= 31  # sign-extends a 32-bit load on a 64-bit host, a no-op on a 32-bit one
    snap = s[SNAP]
    if snap == 0 and end == 0:
        cut = 0
    else:
        cut = 1
    q = 0
    while q < 6:
        w = W_BASE + 2 * q
        c = CW_BASE + 2 * q
        if q < 2:
            tl = (s[SV + q] ^ h) - h
            th = 0
            sl = (s[SNAP_BASE + q] ^ h) - h
            sh = 0
        else:
            tl = s[SV + 2 * q - 2]
            th = (s[SV + 2 * q - 1] ^ h) - h
            sl = s[SNAP_BASE + 2 * q - 2]
            sh = (s[SNAP_BASE + 2 * q - 1] ^ h) - h
        wl = s[w]
        wh = (s[w + 1] ^ h) - h
        if snap:  # ended window = W + part before the snapshot; new W = the rest of the block
            lo = wl + sl
            s[c] = lo & LO_MASK
            s[c + 1] = wh + sh + (lo >> LO_BITS)
            lo = tl - sl
            s[w] = lo & LO_MASK
            s[w + 1] = th - sh + (lo >> LO_BITS)
        else:
            lo = wl + tl
            hi = wh + th + (lo >> LO_BITS)
            lo &= LO_MASK
            if end:  # the window ends with this block
                s[c] = lo
                s[c + 1] = hi
                s[w] = 0
                s[w + 1] = 0
            else:
                s[w] = lo
                s[w + 1] = hi
        q += 1
    q = 0
    while q < 3:  # SATV, SATI, OVER: plain counts
        w = W_BASE + 12 + q
        if snap:
            s[CW_BASE + 12 + q] = s[w] + s[SNAP_BASE + 10 + q]
            s[w] = s[SATV + q] - s[SNAP_BASE + 10 + q]
        elif end:
            s[CW_BASE + 12 + q] = s[w] + s[SATV + q]
            s[w] = 0
        else:
            s[w] = s[w] + s[SATV + q]
        q += 1
    return cut


if sys.implementation.name != "micropython":
    # CPython (tests only): the viper decorator is a no-op there and ptr16 means nothing, so the
    # engine runs on the plain twins (kernels_ref.py; the MicroPython tests prove they are equal).
    from umeter.metering.kernels_ref import block_ref as block  # noqa: E402, F401, F811
    from umeter.metering.kernels_ref import fold_ref as fold  # noqa: E402, F401, F811


def split_value(st, base):
    """The 6 block sums (SV, SI, VV, II, P0, P1 as Python ints) stored at base (SV or SNAP_BASE).
    Tests and tools only: big ints on 32-bit."""
    return (st[base], st[base + 1],
            (st[base + 3] << LO_BITS) + st[base + 2],
            (st[base + 5] << LO_BITS) + st[base + 4],
            (st[base + 7] << LO_BITS) + st[base + 6],
            (st[base + 9] << LO_BITS) + st[base + 8])


def window_value(st, base):
    """The 6 window sums at base (W_BASE or CW_BASE) as Python ints (allocates: once per window)."""
    return [(st[base + 2 * q + 1] << LO_BITS) + st[base + 2 * q] for q in range(6)]


def new_state(bits, pairs):
    """A state array ready for the first block (no crossing armed, v[-1] = 0 V)."""
    if not 1 <= pairs <= MAX_PAIRS:
        raise ValueError("block of %d pairs: 1..%d" % (pairs, MAX_PAIRS))
    if not 8 <= bits <= 16:
        raise ValueError("adc_bits must be 8..16")
    st = array("i", bytes(4 * STATE_LEN))
    mid = 1 << (bits - 1)
    st[N] = pairs
    st[MID] = mid
    st[CHUNK] = chunk_for(bits, pairs)
    st[TOP] = (1 << bits) - 1
    st[ZC] = mid
    st[ZL] = mid - max(1, mid >> 6)
    st[STOP] = NEVER
    st[VPREV] = mid
    return st
