"""umeter.settings under CPython (pure logic): every value an operator may set round-trips through the
blob exactly, every value outside the ranges is refused with nothing changed, and no blob (random,
truncated, bit-flipped, another version) ever raises from load(): it gives the defaults and a note."""
import hashlib
import struct

from hypothesis import given
from hypothesis import strategies as st
from umeter import settings as S


class Board:
    CHECKPOINT_S = 60
    ENGINE = {"profile_min": 15, "demand_s": 60}
    CALIBRATION = {"i_gain": 1.01}


class Mem:
    def __init__(self):
        self.blobs = {}

    def load(self, name):
        return self.blobs.get(name)

    def save(self, name, data):
        self.blobs[name] = bytes(data)


DEFAULTS = S.board_defaults(Board)
CALIB = st.fixed_dictionaries({}, optional=dict(
    (k, st.floats(lo, hi, allow_nan=False, width=32)) for k, lo, hi in S.CALIBRATION))
VALID = st.fixed_dictionaries({}, optional={
    "checkpoint_s": st.integers(*S.CHECKPOINT_S),
    "profile_min": st.sampled_from(S.PROFILE_PERIODS),
    "retention_days": st.integers(*S.RETENTION_DAYS),
    "power_fail": st.booleans(),
    "hold_up_ms": st.integers(*S.HOLD_UP_MS),
    "calibration": CALIB,
    "time": st.tuples(st.integers(*S.UNIX_S), st.integers(0, 2 ** 64 - 1), st.integers(1, 2 ** 32 - 1)),
})


def test_the_blob_layout_is_the_documented_one():
    assert S.SIZE == struct.calcsize(S._FORMAT) == 58  # SETTINGS.md section 2
    from umeter.metering.engine import DEFAULT_CALIB
    # the engine's calibration keys, nothing more or less, in the documented order
    assert [k for k, _, _ in S.CALIBRATION] == ["v_gain", "i_gain", "phase_deg", "v_offset", "i_offset",
                                                "p_offset", "q_offset"]
    assert sorted(k for k, _, _ in S.CALIBRATION) == sorted(DEFAULT_CALIB)


@given(kw=VALID)
def test_every_allowed_value_round_trips(kw):
    s = S.Settings(DEFAULTS).changed(**kw)
    m = Mem()
    S.save(m, s)
    back = S.load(m, DEFAULTS)
    assert back.note is None and back.mask == s.mask
    assert back.as_dict() == s.as_dict()
    for k in ("checkpoint_s", "profile_min", "retention_days", "power_fail", "hold_up_ms"):
        assert getattr(back, k) == (kw[k] if k in kw else DEFAULTS[k])
    if "time" in kw:
        unix, t, rate = kw["time"]
        assert back.clock(t + 5 * rate, rate) == unix + 5 and back.clock(t, rate + 1) is None
        assert t == 0 or back.clock(t - 1, rate) is None  # engine time before the base: no clock
    else:
        assert back.clock(123, 4000) is None


BAD = st.one_of(
    st.fixed_dictionaries({"checkpoint_s": st.one_of(st.integers(max_value=9), st.integers(min_value=3601))}),
    st.fixed_dictionaries({"profile_min": st.integers(-5, 100).filter(lambda p: p not in S.PROFILE_PERIODS)}),
    st.fixed_dictionaries({"retention_days": st.one_of(st.integers(max_value=-1),
                                                       st.integers(min_value=7301))}),
    st.fixed_dictionaries({"hold_up_ms": st.one_of(st.integers(max_value=0), st.integers(min_value=10001))}),
    st.fixed_dictionaries({"power_fail": st.one_of(st.integers(), st.text(max_size=3))}),
    st.fixed_dictionaries({"checkpoint_s": st.one_of(st.booleans(), st.floats(), st.text(max_size=3))}),
    st.fixed_dictionaries({"calibration": st.dictionaries(st.sampled_from([k for k, _, _ in S.CALIBRATION]),
                                                          st.one_of(st.floats(min_value=101), st.floats(
                                                              max_value=-101), st.just(float("nan"))),
                                                          min_size=1)}),
    st.fixed_dictionaries({"calibration": st.dictionaries(st.text(max_size=4), st.floats(0.9, 1.1),
                                                          min_size=1)}),
    st.fixed_dictionaries({"time": st.tuples(st.one_of(st.integers(max_value=S.UNIX_S[0] - 1),
                                                       st.integers(min_value=S.UNIX_S[1] + 1)),
                                             st.integers(0, 10), st.just(4000))}),
)


@given(kw=BAD)
def test_out_of_range_is_refused_and_changes_nothing(kw):
    s = S.Settings(DEFAULTS).changed(retention_days=30)
    before = s.pack()
    try:
        s.changed(**kw)
    except S.SettingsError as e:
        assert str(e)
    else:
        raise AssertionError("accepted %r" % (kw,))
    assert s.pack() == before


@given(blob=st.binary(max_size=80))
def test_any_blob_gives_settings_never_an_exception(blob):
    m = Mem()
    m.blobs[S.BLOB] = blob
    s = S.load(m, DEFAULTS)
    assert isinstance(s, S.Settings)
    if s.note is not None:
        assert s.mask == 0 or "out of range" in s.note


@given(kw=VALID, bit=st.integers(0, 8 * (S.SIZE + 4) - 1))
def test_a_flipped_bit_gives_the_defaults_and_a_note(kw, bit):
    m = Mem()
    S.save(m, S.Settings(DEFAULTS).changed(**kw))
    blob = bytearray(m.blobs[S.BLOB])
    blob[bit // 8] ^= 1 << (bit % 8)
    m.blobs[S.BLOB] = bytes(blob)
    s = S.load(m, DEFAULTS)
    assert "damaged" in s.note and s.mask == 0 and s.as_dict()["checkpoint_s"] == 60


def test_another_version_and_out_of_range_fields():
    data = bytearray(S.Settings(DEFAULTS).changed(retention_days=9, checkpoint_s=30).pack())
    data[0] = 2
    m = Mem()
    m.blobs[S.BLOB] = S.seal(bytes(data))
    s = S.load(m, DEFAULTS)
    assert "version 2" in s.note and s.retention_days == 0
    data[0] = 1
    struct.pack_into(">H", data, 5, 9999)  # retention days beyond 7300, checked again at load
    m.blobs[S.BLOB] = S.seal(bytes(data))
    s = S.load(m, DEFAULTS)
    assert "out of range" in s.note and s.retention_days == 0 and s.checkpoint_s == 30
    assert S.load(None, DEFAULTS).note and S.load(Mem(), DEFAULTS).note is None
    assert hashlib.sha256(bytes(data)).digest()[:4] == m.blobs[S.BLOB][-4:]
