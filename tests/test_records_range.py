"""Checkpoint and profile records under CPython (the host's export runs this same code): every
register value up to 2**64 mWh - 1 round-trips exactly, anything larger or negative is refused, old
versions decode, and packing.pack checks every integer field the way CPython's struct would."""
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st
from umeter import records
from umeter.metering import packing

FRAC = 24
FU = st.integers(0, (1 << (64 + FRAC)) - 1)


@given(t=st.integers(0, (1 << 64) - 1), regs=st.lists(FU, min_size=4, max_size=4))
def test_checkpoint_round_trips_every_representable_register(t, regs):
    snap = [1, FRAC, t] + regs
    typ, fields = records.decode(records.checkpoint(snap))
    assert typ == records.REC_CHECKPOINT and fields["snapshot"] == snap and fields["version"] == 2


@given(k=st.integers(0, 3), over=st.integers(1 << (64 + FRAC), 1 << 200))
def test_checkpoint_refuses_registers_of_2_64_mwh_and_more(k, over):
    regs = [0, 0, 0, 0]
    regs[k] = over
    with pytest.raises(ValueError, match="does not fit"):
        records.checkpoint([1, FRAC, 0] + regs)


@given(st.lists(st.integers(0, (1 << 64) - 1), min_size=5, max_size=5))
def test_version_1_checkpoints_decode(vals):
    body = struct.pack(records.CHECKPOINT_FORMAT_V1, 1, FRAC, *vals)
    assert records.decode(bytes((records.REC_CHECKPOINT,)) + body)[1]["snapshot"] == [1, FRAC] + vals


@given(code=st.sampled_from("BHIQbhiq"), v=st.integers(-(1 << 70), 1 << 70))
def test_pack_refuses_exactly_what_struct_cannot_hold(code, v):
    lo, hi = packing.limits(code)
    if lo <= v <= hi:
        assert packing.pack("<" + code, v) == struct.pack("<" + code, v)
    else:
        with pytest.raises(ValueError, match="does not fit"):
            packing.pack("<" + code, v)
        with pytest.raises(struct.error):
            struct.pack("<" + code, v)


def test_pack_refuses_non_ints_and_wrong_counts():
    with pytest.raises(ValueError, match="must be an int"):
        packing.pack("<I", 1.0)
    with pytest.raises(ValueError, match="must be an int"):
        packing.pack("<B", True)
    with pytest.raises(ValueError, match="values for"):
        packing.pack("<II", 1)
