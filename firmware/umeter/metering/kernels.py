"""Metering hot path: one pass over a block of interleaved unsigned V,I samples.

`block(buf, st)` (viper) and its plain-Python twin `block_ref(buf, st)` compute, for the pairs
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
sample k is added) to the SNAP_* slots, so the engine can end a window on a whole cycle inside a
block in the same single pass.

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
    indices, counts < 2 * MAX_PAIRS. Loads from the state array are all non-negative (viper's
    32-bit load zero-extends on 64-bit hosts), signed results are only stored.
The engine adds each block's results into Python ints, so window totals are unbounded and exact.
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
# Carried from block to block (the kernel reads and writes them):
ARMED = const(6)
VPREV = const(7)  # raw last V of the previous block
# Results:
NC = const(8)  # rising crossings in the block
SNAP = const(9)  # 1 when the snapshot was taken
SV = const(10)
SI = const(11)
VVL = const(12)
VVH = const(13)
IIL = const(14)
IIH = const(15)
P0L = const(16)
P0H = const(17)
P1L = const(18)
P1H = const(19)
SNAP_BASE = const(20)  # SNAP_BASE + (SV..P1H - SV): accumulators before sample SNAP_J
SNAP_NC = const(30)  # crossings before the snapshot crossing
SNAP_J = const(31)
SNAP_VB = const(32)
SNAP_VA = const(33)
FC_J = const(34)  # first crossing of the block: index, raw V before, raw V after
FC_VB = const(35)
FC_VA = const(36)
LC_J = const(37)  # last crossing
LC_VB = const(38)
LC_VA = const(39)
STATE_LEN = const(40)

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
            i = b[x + 1] - mid
            x += 2
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
                        s[SNAP_BASE + 2] = vvl
                        s[SNAP_BASE + 3] = vvh
                        s[SNAP_BASE + 4] = iil
                        s[SNAP_BASE + 5] = iih
                        s[SNAP_BASE + 6] = p0l
                        s[SNAP_BASE + 7] = p0h
                        s[SNAP_BASE + 8] = p1l
                        s[SNAP_BASE + 9] = p1h
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
    return nc


def block_ref(buf, st):
    """Plain-Python twin of block(): the same algorithm, statement for statement (test oracle,
    and the bytecode/@native baseline of the benchmark)."""
    n = st[N]
    mid = st[MID]
    chunk = st[CHUNK]
    zc = st[ZC]
    zl = st[ZL]
    stop = st[STOP]
    armed = st[ARMED]
    vb = st[VPREV]
    vp = vb - mid
    sv = si = vvl = vvh = iil = iih = p0l = p0h = p1l = p1h = 0
    nc = 0
    snapped = 0
    k = 0
    x = 0
    while k < n:
        e = k + chunk
        if e > n:
            e = n
        while k < e:
            va = buf[x]
            i = buf[x + 1] - mid
            x += 2
            if armed:
                if va >= zc:
                    armed = 0
                    if nc == 0:
                        st[FC_J] = k
                        st[FC_VB] = vb
                        st[FC_VA] = va
                    st[LC_J] = k
                    st[LC_VB] = vb
                    st[LC_VA] = va
                    if k >= stop and snapped == 0:
                        snapped = 1
                        st[SNAP_BASE] = sv
                        st[SNAP_BASE + 1] = si
                        st[SNAP_BASE + 2] = vvl
                        st[SNAP_BASE + 3] = vvh
                        st[SNAP_BASE + 4] = iil
                        st[SNAP_BASE + 5] = iih
                        st[SNAP_BASE + 6] = p0l
                        st[SNAP_BASE + 7] = p0h
                        st[SNAP_BASE + 8] = p1l
                        st[SNAP_BASE + 9] = p1h
                        st[SNAP_NC] = nc
                        st[SNAP_J] = k
                        st[SNAP_VB] = vb
                        st[SNAP_VA] = va
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
    st[ARMED] = armed
    st[VPREV] = vb
    st[NC] = nc
    st[SNAP] = snapped
    st[SV] = sv
    st[SI] = si
    st[VVL] = vvl
    st[VVH] = vvh
    st[IIL] = iil
    st[IIH] = iih
    st[P0L] = p0l
    st[P0H] = p0h
    st[P1L] = p1l
    st[P1H] = p1h
    return nc


if sys.implementation.name != "micropython":
    # CPython (tests only): the viper decorator is a no-op there and ptr16 means nothing, so the
    # engine runs on the twin; the MicroPython tests prove block() == block_ref().
    block = block_ref  # noqa: F811


def split_value(st, base):
    """The 6 accumulators (SV, SI, VV, II, P0, P1 as Python ints) stored at base (SV or SNAP_BASE)."""
    return (st[base], st[base + 1],
            (st[base + 3] << LO_BITS) + st[base + 2],
            (st[base + 5] << LO_BITS) + st[base + 4],
            (st[base + 7] << LO_BITS) + st[base + 6],
            (st[base + 9] << LO_BITS) + st[base + 8])


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
    st[ZC] = mid
    st[ZL] = mid - max(1, mid >> 6)
    st[STOP] = NEVER
    st[VPREV] = mid
    return st
