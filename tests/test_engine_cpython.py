"""Metering engine and kernel twin under CPython (hypothesis where it finds things): the kernel's
sums and crossings against an independent oracle, the integer rounding helpers, the creep gate,
the profile format, and the same registers as the MicroPython unix port for the same stream."""
import struct
from array import array
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sim.grid import Grid
from umeter.metering import engine as E
from umeter.metering import kernels as K
from umeter.metering import kernels_ref as R
from umeter.metering import obis


def oracle(blocks, bits, zc, zl, stops):
    """Straightforward re-statement of the kernel contract over a sequence of blocks: codes above
    the width clipped and counted, rail samples counted per channel."""
    mid = 1 << (bits - 1)
    top = (1 << bits) - 1
    armed, vb = False, mid
    out = []
    for buf, stop in zip(blocks, stops):
        n = len(buf) // 2
        acc = [0] * 6
        cnt = [0, 0, 0]  # SATV, SATI, OVER
        crossings = []
        snap = None
        for k in range(n):
            raw = buf[2 * k], buf[2 * k + 1]
            va, ia = min(raw[0], top), min(raw[1], top)
            if armed and va >= zc:
                armed = False
                crossings.append((k, vb, va))
                if snap is None and k >= stop:
                    snap = (list(acc), list(cnt), len(crossings) - 1, (k, vb, va))
            elif not armed and va < zl:
                armed = True
            v, i = va - mid, ia - mid
            for j, x in enumerate((v, i, v * v, i * i, v * i, (vb - mid) * i)):
                acc[j] += x
            cnt[0] += va in (0, top)
            cnt[1] += ia in (0, top)
            cnt[2] += (raw[0] > top) + (raw[1] > top)
            vb = va
        out.append((acc, cnt, crossings, snap))
    return out


@settings(max_examples=60, deadline=None)
@given(data=st.data(), bits=st.sampled_from([10, 12, 16]), n=st.integers(1, 300),
       nblocks=st.integers(1, 4))
def test_kernel_twin_against_oracle(data, bits, n, nblocks):
    top = (1 << bits) - 1
    codes = st.one_of(st.integers(0, top), st.integers(0, 65535), st.sampled_from([0, top]))
    blocks = [array("H", data.draw(st.lists(codes, min_size=2 * n, max_size=2 * n))) for _ in range(nblocks)]
    stops = [data.draw(st.integers(0, n + 1)) for _ in range(nblocks)]
    zc = data.draw(st.integers(1, top))
    zl = data.draw(st.integers(0, zc))
    state = K.new_state(bits, n)
    state[K.ZC], state[K.ZL] = zc, zl
    for buf, stop, (acc, cnt, crossings, snap) in zip(blocks, stops, oracle(blocks, bits, zc, zl, stops)):
        state[K.STOP] = stop if stop < n else K.NEVER
        assert R.block_ref(buf, state) == len(crossings)
        assert list(K.split_value(state, K.SV)) == acc
        assert [state[K.SATV], state[K.SATI], state[K.OVER]] == cnt
        if crossings:
            assert (state[K.FC_J], state[K.FC_VB], state[K.FC_VA]) == crossings[0]
            assert (state[K.LC_J], state[K.LC_VB], state[K.LC_VA]) == crossings[-1]
        assert state[K.SNAP] == (snap is not None and stop < n)
        if state[K.SNAP]:
            assert list(K.split_value(state, K.SNAP_BASE)) == snap[0]
            assert [state[K.SNAP_BASE + 10 + q] for q in range(3)] == snap[1]
            assert state[K.SNAP_NC] == snap[2]
            assert (state[K.SNAP_J], state[K.SNAP_VB], state[K.SNAP_VA]) == snap[3]


@settings(max_examples=40, deadline=None)
@given(data=st.data(), bits=st.sampled_from([12, 16]), n=st.integers(1, 200), nblocks=st.integers(1, 6))
def test_fold_cuts_windows_exactly_where_the_snapshot_or_the_block_end_says(data, bits, n, nblocks):
    top = (1 << bits) - 1
    codes = st.one_of(st.integers(0, top), st.integers(0, 65535))
    blocks = [array("H", data.draw(st.lists(codes, min_size=2 * n, max_size=2 * n))) for _ in range(nblocks)]
    stops = [data.draw(st.integers(0, n + 1)) for _ in range(nblocks)]
    ends = [data.draw(st.integers(0, 1)) for _ in range(nblocks)]
    mid = 1 << (bits - 1)
    state = K.new_state(bits, n)
    state[K.ZC], state[K.ZL] = mid, mid - 40
    window = [0] * 9
    for buf, stop, end, (acc, cnt, _, snap) in zip(blocks, stops, ends,
                                                   oracle(blocks, bits, mid, mid - 40, stops)):
        state[K.STOP] = stop if stop < n else K.NEVER
        R.block_ref(buf, state)
        cut = R.fold_ref(state, end)
        block = acc + cnt
        if snap is not None and stop < n:
            before = snap[0] + snap[1]
            closed = [w + b for w, b in zip(window, before)]
            window = [b - x for b, x in zip(block, before)]
        elif end:
            closed = [w + b for w, b in zip(window, block)]
            window = [0] * 9
        else:
            closed = None
            window = [w + b for w, b in zip(window, block)]
        assert cut == (closed is not None)
        if closed is not None:
            got = K.window_value(state, K.CW_BASE) + [state[K.CW_BASE + 12 + q] for q in range(3)]
            assert got == closed
        assert K.window_value(state, K.W_BASE) + [state[K.W_BASE + 12 + q] for q in range(3)] == window
        for base in (K.W_BASE, K.CW_BASE):  # lo halves normalised
            for q in range(6):
                assert 0 <= state[base + 2 * q] < 1 << K.LO_BITS


@given(num=st.integers(-(10 ** 30), 10 ** 30), sh=st.integers(-20, 60), n=st.integers(1, 10 ** 6))
def test_div_round_is_round_half_up(num, sh, n):
    q = Fraction(num, n) / Fraction(2) ** sh
    assert E._div_round(num, sh, n) == (q + Fraction(1, 2)).__floor__()


@given(st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=1, max_size=4))
def test_fixed_point_coefficients(coefs):
    ints, sh = E._fixed(coefs)
    big = max(abs(c) for c in coefs)
    unit = Fraction(1) / Fraction(2) ** sh
    for c, m in zip(coefs, ints):
        assert abs(m * unit - Fraction(c)) <= unit / 2  # rounded to the nearest unit of the scale
    if big:
        assert 2 ** 29 <= max(abs(m) for m in ints) <= 2 ** 30  # the largest keeps ~30 bits


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(-10 ** 12, 10 ** 12), st.integers(-10 ** 12, 10 ** 12)),
                min_size=1, max_size=200))
def test_gate_books_big_windows_exactly_and_drops_no_load_noise(windows):
    eng = E.Engine(4000, 12, 200)
    run_fu = int(8 * eng.creep_w * E._FU_PER_J) + 1  # a 1-s window above this bypasses the gate
    exact = [0, 0, 0, 0]
    for e_p, e_q in windows:
        e_p = e_p + run_fu if e_p >= 0 else e_p - run_fu
        e_q = e_q + run_fu if e_q >= 0 else e_q - run_fu
        eng.commit_window(e_p, e_q, 4000)
        exact[0 if e_p > 0 else 1] += abs(e_p)
        exact[2 if e_q > 0 else 3] += abs(e_q)
    eng.flush()
    assert [eng.register_fu(c) for c in obis.REGISTERS] == exact
    # tiny alternating windows whose mean is far below the threshold never reach a register
    quiet = E.Engine(4000, 12, 200)
    small = int(0.9 * quiet.creep_w * E._FU_PER_J)
    for k in range(100):
        quiet.commit_window(small if k % 2 else -small, small if k % 3 else -small, 4000)
    quiet.flush()
    assert [quiet.register_fu(c) for c in obis.REGISTERS] == [0, 0, 0, 0]
    # ...but a steady one just above it does, all of it
    steady = E.Engine(4000, 12, 200)
    just = int(1.05 * steady.creep_w * E._FU_PER_J)
    for _ in range(30):
        steady.commit_window(just, 0, 4000)
    steady.flush()
    assert steady.register_fu(obis.A_IMPORT) == 30 * just


U32 = st.integers(0, 2 ** 32 - 1)


@given(st.tuples(st.integers(0, 255), st.integers(1, 60), U32, *[U32] * 4, *[st.integers(0, 65535)] * 3, U32,
                U32))
def test_profile_record_round_trip(f):
    rec = struct.pack(E.PROFILE_FORMAT, 2, *f)
    assert len(rec) == E.PROFILE_SIZE == 38
    d = E.decode_profile(rec)
    assert (d["flags"], d["minutes"], d["t_end_s"]) == f[:3]
    assert [d[c] for c in obis.REGISTERS] == list(f[3:7])
    assert round(d[obis.VOLTAGE_MIN] * 100) == f[7] and round(d[obis.VOLTAGE_MAX] * 100) == f[9]
    assert round(d[obis.DEMAND_MAX] * 1000) == f[10] and d["sat_samples"] == f[11]
    old = struct.pack(E.PROFILE_FORMAT_V1, 1, *f[:11])  # version 1 records still decode
    assert len(old) == E.PROFILE_SIZE_V1 == 34
    d1 = E.decode_profile(old)
    assert d1["sat_samples"] is None and dict(d1, version=2, sat_samples=f[11]) == d


def test_config_is_checked():
    with pytest.raises(ValueError, match="half a window"):
        E.Engine(4000, 12, 4000)
    with pytest.raises(ValueError, match="demand_s"):
        E.Engine(4000, 12, 200, profile_min=15, demand_s=7)
    with pytest.raises(ValueError, match="pairs"):
        K.new_state(12, K.MAX_PAIRS + 1)


ENGINE_SNIPPET = """
from sim.grid import Grid
from umeter.metering.engine import Engine
g = Grid({"irms": 9.0, "phase_deg": 35.0, "noise_lsb": 2, "skew_us": 125, "harmonics": [[3, 1, 15]]})
e = Engine.for_source(g, profile_min=1)
e.run(g, 20 * 70)
e.flush()
print(e.snapshot(), e.records)
"""


def test_cpython_twin_books_the_same_registers_as_the_unix_port(micropython):
    # the same stream through CPython (kernel twin) and the unix port (viper kernel): both hosts
    # use IEEE doubles, so registers and the profile record come out bit for bit the same
    out = micropython(ENGINE_SNIPPET, heapsize="8M").strip()
    g = Grid({"irms": 9.0, "phase_deg": 35.0, "noise_lsb": 2, "skew_us": 125, "harmonics": [[3, 1, 15]]})
    e = E.Engine.for_source(g, profile_min=1)
    e.run(g, 20 * 70)
    e.flush()
    assert out == "%s %s" % (e.snapshot(), e.records)
    assert len(e.records) == 1 and e.register_fu(obis.A_IMPORT) > 0
