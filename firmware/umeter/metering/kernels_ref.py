"""Plain-Python twins of the viper kernels in kernels.py: the same algorithms, statement for
statement, on the same state array. They are the oracle of the tests (tests/mpt_kernels.py proves
block() == block_ref() and fold() == fold_ref() on both lanes), what the engine runs under CPython,
and the bytecode / @native baselines of bench-metering (which compiles these functions with the
kernel's constants folded in, as they are in kernels.py)."""
from umeter.metering.kernels import (  # noqa: I001
    ARMED, CHUNK, CW_BASE, FC_J, FC_VA, FC_VB, IIH, IIL, LC_J, LC_VA, LC_VB, LO_BITS, LO_MASK, MID, N, NC,
    OVER, P0H, P0L, P1H, P1L, SATI, SATV, SI, SNAP, SNAP_BASE, SNAP_J, SNAP_NC, SNAP_VA, SNAP_VB, STOP, SV,
    TOP, VPREV, VVH, VVL, W_BASE, ZC, ZL
)


def block_ref(buf, st):
    """Plain-Python twin of block(): the same algorithm, statement for statement (test oracle,
    and the bytecode/@native baseline of the benchmark)."""
    n = st[N]
    mid = st[MID]
    chunk = st[CHUNK]
    zc = st[ZC]
    zl = st[ZL]
    stop = st[STOP]
    top = st[TOP]
    armed = st[ARMED]
    vb = st[VPREV]
    vp = vb - mid
    sv = si = vvl = vvh = iil = iih = p0l = p0h = p1l = p1h = 0
    satv = sati = over = 0
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
            ia = buf[x + 1]
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
                        st[SNAP_BASE + 2] = vvl & LO_MASK
                        st[SNAP_BASE + 3] = vvh + (vvl >> LO_BITS)
                        st[SNAP_BASE + 4] = iil & LO_MASK
                        st[SNAP_BASE + 5] = iih + (iil >> LO_BITS)
                        st[SNAP_BASE + 6] = p0l & LO_MASK
                        st[SNAP_BASE + 7] = p0h + (p0l >> LO_BITS)
                        st[SNAP_BASE + 8] = p1l & LO_MASK
                        st[SNAP_BASE + 9] = p1h + (p1l >> LO_BITS)
                        # the counts already hold sample k, which belongs after the snapshot
                        cv = satv
                        if va == top:
                            cv -= 1
                        ci = sati
                        if ia == top or ia == 0:
                            ci -= 1
                        co = over
                        if buf[x - 2] > top:
                            co -= 1
                        if buf[x - 1] > top:
                            co -= 1
                        st[SNAP_BASE + 10] = cv
                        st[SNAP_BASE + 11] = ci
                        st[SNAP_BASE + 12] = co
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
    st[SATV] = satv
    st[SATI] = sati
    st[OVER] = over
    return nc


def fold_ref(st, end):
    """Plain-Python twin of fold() (array('i') reads are signed already)."""
    snap = st[SNAP]
    for q in range(6):
        w = W_BASE + 2 * q
        c = CW_BASE + 2 * q
        if q < 2:
            tl, th = st[SV + q], 0
            sl, sh = st[SNAP_BASE + q], 0
        else:
            tl, th = st[SV + 2 * q - 2], st[SV + 2 * q - 1]
            sl, sh = st[SNAP_BASE + 2 * q - 2], st[SNAP_BASE + 2 * q - 1]
        wl, wh = st[w], st[w + 1]
        if snap:
            lo = wl + sl
            st[c] = lo & LO_MASK
            st[c + 1] = wh + sh + (lo >> LO_BITS)
            lo = tl - sl
            st[w] = lo & LO_MASK
            st[w + 1] = th - sh + (lo >> LO_BITS)
        else:
            lo = wl + tl
            hi = wh + th + (lo >> LO_BITS)
            lo &= LO_MASK
            if end:
                st[c], st[c + 1] = lo, hi
                st[w] = st[w + 1] = 0
            else:
                st[w], st[w + 1] = lo, hi
    for q in range(3):
        w = W_BASE + 12 + q
        if snap:
            st[CW_BASE + 12 + q] = st[w] + st[SNAP_BASE + 10 + q]
            st[w] = st[SATV + q] - st[SNAP_BASE + 10 + q]
        elif end:
            st[CW_BASE + 12 + q] = st[w] + st[SATV + q]
            st[w] = 0
        else:
            st[w] += st[SATV + q]
    return 1 if snap or end else 0
