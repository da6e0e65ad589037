"""Sample blocks -> windows of whole mains cycles, with no allocation per block.

`Windows.feed_block(buf)` runs the kernel on one block, folds its sums into the window accumulators
(kernels.fold) and keeps the window's crossings, all in 32-bit words and small ints: nothing on the
heap, so it runs under micropython.heap_lock() on 31-bit-small-int targets too. When a window ends
in the block it returns True; `ended()` then gives that window's figures (Python ints and floats:
the per-window step, which may allocate), and `done()` releases it before the next block.

A window runs from one rising crossing of V to the first crossing at or after `arm` samples into
it (the engine sets arm = window length - half a period), cut inside the block by the kernel's
snapshot; without crossings it ends at the first block end past 1.25 window lengths. Time here is
`pos`, the samples of the window in progress fed so far; the engine keeps absolute meter time.
"""
from array import array

from micropython import const

from umeter.metering import kernels

# Per-window small ints (array('i', _LEN)): the window in progress at 0.._WIN-1, the window that
# ended copied to _C.._C+_WIN-1, then its extras. A crossing is 3 ints: i, num, den with time
# i + num / den samples after the window start (den = 0: none yet), so no float is made per block.
_TF = const(0)  # first rising crossing of the window
_TL = const(3)  # last rising crossing
_NC = const(6)  # rising crossings
_VBEFORE = const(7)  # raw V of the sample before the window's first
_WIN = const(8)
_C = const(8)
_C_N = const(16)  # samples in the ended window
_C_VLAST = const(17)  # its last raw V
_C_ALIGNED = const(18)  # 1: it ended on a crossing
_LEN = const(19)


class Windows:
    def __init__(self, adc_bits, block_pairs, window_n):
        self.block_pairs = block_pairs
        self.window_n = window_n
        self.timeout = window_n + window_n // 4
        self.arm = window_n
        self.st = kernels.new_state(adc_bits, block_pairs)
        self._win = array("i", bytes(4 * _LEN))
        self.pos = 0
        self.ready = False

    def reset(self, mid, zl):
        """Start afresh (no crossing armed, v[-1] = mid), crossings at mid with hysteresis down to zl."""
        st = self.st
        st[kernels.ARMED] = 0
        st[kernels.VPREV] = mid
        self.set_level(mid, zl)
        for k in range(kernels.W_BASE, kernels.STATE_LEN):
            st[k] = 0
        win = self._win
        for k in range(_LEN):
            win[k] = 0
        win[_VBEFORE] = mid
        self.pos = 0
        self.ready = False

    def set_level(self, zc, zl):
        """The raw code V must rise to for a crossing, and fall below to arm the next one."""
        self.st[kernels.ZC] = zc
        self.st[kernels.ZL] = zl

    def pending(self):
        """Samples of the window that ended and was not released yet (0: none)."""
        return self._win[_C_N] if self.ready else 0

    def feed_block(self, buf):
        """One block; True when a window ended in it (then ended()/done() before the next)."""
        if self.ready:
            raise RuntimeError("the ended window was not released")
        st = self.st
        win = self._win
        pos0 = self.pos
        n = self.block_pairs
        arm = self.arm - pos0
        st[kernels.STOP] = 0 if arm <= 0 else (arm if arm < n else kernels.NEVER)
        zc = st[kernels.ZC]
        nc = kernels.block(buf, st)
        timeout = pos0 + n >= self.timeout
        kernels.fold(st, 1 if timeout else 0)
        if st[kernels.SNAP]:  # the window ends at a crossing inside this block
            snc = st[kernels.SNAP_NC]
            if snc and not win[_TF + 2]:
                _crossing(win, _TF, pos0, st, kernels.FC_J, zc)
            j = st[kernels.SNAP_J]
            _crossing(win, _TL, pos0, st, kernels.SNAP_J, zc)
            if not win[_TF + 2]:
                _copy(win, _TL, _TF, 3)
            win[_NC] += snc + 1
            _copy(win, 0, _C, _WIN)
            win[_C_N] = pos0 + j
            win[_C_VLAST] = st[kernels.SNAP_VB]
            win[_C_ALIGNED] = 1
            # the new window starts at sample j, on the snapshot crossing
            self.pos = n - j
            win[_VBEFORE] = st[kernels.SNAP_VB]
            win[_TL] -= pos0 + j
            _copy(win, _TL, _TF, 3)
            win[_NC] = 1
            rest = nc - snc - 1
            if rest:
                _crossing(win, _TL, -j, st, kernels.LC_J, zc)
                win[_NC] += rest
            self.ready = True
            return True
        if nc:
            if not win[_TF + 2]:
                _crossing(win, _TF, pos0, st, kernels.FC_J, zc)
            _crossing(win, _TL, pos0, st, kernels.LC_J, zc)
            win[_NC] += nc
        if timeout:  # no crossing ended it: it ends with this block
            self._end_here(pos0 + n)
            return True
        self.pos = pos0 + n
        return False

    def end_now(self):
        """End the window in progress at the last sample fed (a clean stop). True if it had samples
        (then ended()/done() as after feed_block)."""
        if self.ready:
            raise RuntimeError("the ended window was not released")
        if not self.pos:
            return False
        st = self.st
        for k in range(kernels.SV, kernels.SV + kernels.ACC_LEN):  # fold an empty block
            st[k] = 0
        st[kernels.SNAP] = 0
        kernels.fold(st, 1)
        self._end_here(self.pos)
        return True

    def _end_here(self, length):
        # the window in progress (its sums already folded into CW_*) ends after `length` samples,
        # at the last sample fed, not on a crossing; the next one starts empty
        win = self._win
        vlast = self.st[kernels.VPREV]
        _copy(win, 0, _C, _WIN)
        win[_C_N] = length
        win[_C_VLAST] = vlast
        win[_C_ALIGNED] = 0
        self.pos = 0
        for k in range(_WIN):
            win[k] = 0
        win[_VBEFORE] = vlast
        self.ready = True

    def ended(self):
        """The ended window: (n, sums, sv1_correction, aligned_end, tf, tl, crossings, sat_v, sat_i,
        clipped). sums = [SV, SI, VV, II, P0, P1] (Python ints); sum of v[k-1] = SV + correction;
        tf, tl: first and last crossing (float samples after its start, or None)."""
        win = self._win
        st = self.st
        cw = kernels.CW_BASE
        mid = self.st[kernels.MID]
        return (win[_C_N], kernels.window_value(st, cw),
                (win[_C + _VBEFORE] - mid) - (win[_C_VLAST] - mid), win[_C_ALIGNED] == 1,
                _ctime(win, _C + _TF), _ctime(win, _C + _TL), win[_C + _NC],
                st[cw + 12], st[cw + 13], st[cw + 14])

    def done(self):
        """Release the ended window (the next block may come)."""
        self.ready = False


def _crossing(win, at, pos, st, j, zc):
    """Store the kernel's crossing at st[j:j+3] (index, V before, V after) as win[at:at+3], its
    time counted from `pos` samples before the block's first sample."""
    vb = st[j + 1]
    win[at] = pos + st[j] - 1
    win[at + 1] = zc - vb
    win[at + 2] = st[j + 2] - vb


def _copy(win, src, dst, n):
    for k in range(n):
        win[dst + k] = win[src + k]


def _ctime(win, at):
    """A stored crossing's time (float samples after the window start), or None."""
    den = win[at + 2]
    return win[at] + win[at + 1] / den if den else None
