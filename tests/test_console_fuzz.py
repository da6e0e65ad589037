"""Protocol fuzzing of the production-mode console (umeter.console).

CPython, hypothesis: random bytes, mutated frames (CRC fixed again, so they reach the console's logic),
oversize lengths, bad CRCs and byte floods never raise, keep every feed() bounded in output and decoder
memory, and never answer beyond the public line without authentication; inside a session, no mutated
frame ever reaches a handler.

MicroPython (both lanes): the same checks on the unix port, over a few thousand frames generated here
with a seeded generator (public and session streams), and over hypothesis examples (one unix-port run
each), fed there by tests/mpt_console_kit.py.
"""
import os
import random
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mpplugin import lanes, lane_binary, run_micropython, LANE_SLOWDOWN
from mpt_console_kit import Host, SeededRandom, fuzz_public, fuzz_session, make_console
from umeter.console import framing, roles

FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
CODES = sorted(roles.COMMANDS) + [0x00, 0x05, 0x27, 0x38, 0x7F, 0xFF]


def refix_crc(frame):
    """The frame with its last two bytes made the CRC of the rest again."""
    f = bytearray(frame)
    if len(f) >= 3:
        crc = framing.crc16(f, 0, len(f) - 2)
        f[-2:] = bytes((crc >> 8, crc & 0xFF))
    return bytes(f)


def mutate(rng, frame):
    """One of: bit flip, byte overwrite, truncation, insertion, deletion, length field rewrite, flag
    bits; about half of them get a correct CRC again."""
    f = bytearray(frame)
    kind = rng.randrange(7)
    at = rng.randrange(len(f))
    if kind == 0:
        f[at] ^= 1 << rng.randrange(8)
    elif kind == 1:
        f[at] = rng.randrange(256)
    elif kind == 2:
        del f[max(1, at):]
    elif kind == 3:  # inside the frame: bytes in front of it would leave the frame itself intact
        at = max(1, at)
        f[at:at] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 8)))
    elif kind == 4:
        del f[at:at + rng.randrange(1, 8)]
    elif kind == 5:
        f[2:4] = struct.pack(">H", rng.choice((0, 1, len(f), 1024, 1025, 0xFFFF, rng.randrange(65536))))
    else:
        f[4] = rng.randrange(256)
    if rng.random() < 0.5:
        f = bytearray(refix_crc(f))
    if bytes(f) == bytes(frame):  # a mutation that changed nothing is no mutation
        f[-1] ^= 0x01
    return bytes(f)


def rbytes(rng, n):
    return bytes(rng.randrange(256) for _ in range(n))


def random_frame(rng):
    code = rng.choice(CODES)
    payload = rbytes(rng, rng.choice((0, 1, 2, 16, 40, 64, 200)))
    mac = rbytes(rng, 16) if rng.random() < 0.5 else None
    flags = rng.choice((0, 0, framing.FLAG_ENC if mac else 0, framing.FLAG_RESPONSE, framing.FLAG_ERROR))
    return framing.encode(code, rng.randrange(framing.MAX_SEQ + 1), payload, flags, mac)


def public_stream(rng, frames):
    """Random and mutated frames, oversize headers, bad CRCs, garbage and floods, cut into chunks."""
    parts = []
    for _ in range(frames):
        pick = rng.random()
        f = random_frame(rng)
        if pick < 0.35:
            parts.append(f)
        elif pick < 0.8:
            parts.append(mutate(rng, f))
        elif pick < 0.88:
            parts.append(bytes((0xA5, 1)) + struct.pack(">H", rng.randrange(1025, 65536)) + rbytes(rng, 5))
        elif pick < 0.94:
            parts.append(rbytes(rng, rng.randrange(1, 300)))
        else:
            parts.append(bytes((rng.choice((0xA5, 0x00, 0xFF)),)) * rng.randrange(1, 2000))
    return chunked(rng, b"".join(parts))


def chunked(rng, data):
    chunks = []
    i = 0
    while i < len(data):
        n = rng.choice((1, 7, 64, 256, 1100))
        chunks.append(data[i:i + n])
        i += n
    return chunks


def session_stream(rng, seed, frames):
    """Log in as reader against a console whose nonces come from SeededRandom(seed), then `frames`
    status requests with unique payloads, about half of them mutated. Returns (chunks, originals)."""
    h = Host(make_console(urandom=SeededRandom(seed)))
    sent = []
    console = h.console
    real_feed = console.feed

    def recording_feed(data):
        sent.append(bytes(data))
        return real_feed(data)

    console.feed = recording_feed
    assert h.login(roles.READER).flags & framing.FLAG_ERROR == 0
    originals = []
    for i in range(frames):
        payload = b"req %d" % i
        f = h.frame(0x10, payload)
        if rng.random() < 0.5:
            m = mutate(rng, f)
            sent.append(m)
            if m.startswith(f):  # bytes after an intact frame: the frame itself is no forgery
                originals.append(payload)
        else:
            sent.append(f)
            originals.append(payload)
    return chunked(rng, b"".join(sent)), originals


# --- CPython, hypothesis ---------------------------------------------------------------------------------
@FUZZ
@given(st.lists(st.binary(max_size=600), max_size=25))
def test_random_bytes_answer_only_the_public_line(chunks):
    fuzz_public(chunks)


@FUZZ
@given(st.integers(0, 2 ** 32 - 1), st.integers(1, 40))
def test_mutated_frames_answer_only_the_public_line(seed, frames):
    rng = random.Random(seed)
    fuzz_public(public_stream(rng, frames))


@FUZZ
@given(st.lists(st.tuples(st.sampled_from(CODES), st.binary(max_size=80), st.integers(0, 15)), max_size=12),
       st.integers(0, 2 ** 32 - 1))
def test_well_formed_frames_of_any_command_without_login(items, seed):
    rng = random.Random(seed)
    frames = []
    for code, payload, flags in items:
        if flags & framing.FLAG_ENC:
            flags |= framing.FLAG_MAC
        mac = os.urandom(16) if flags & framing.FLAG_MAC else None
        frames.append(framing.encode(code, rng.randrange(1 << 24), payload, flags & ~framing.FLAG_MAC, mac))
    fuzz_public(chunked(rng, b"".join(frames)))


@FUZZ
@given(st.integers(0, 2 ** 32 - 1), st.integers(1, 30))
def test_mutated_session_frames_never_reach_a_handler(seed, frames):
    rng = random.Random(seed)
    chunks, originals = session_stream(rng, b"s%d" % seed, frames)
    seen, _ = fuzz_session(chunks, b"s%d" % seed)
    assert len(set(seen)) == len(seen), "a frame ran twice"
    assert set(seen) <= set(originals), "a mutated frame reached a handler"


def test_floods_and_worst_case_rescans():
    """Named cases: floods of start bytes, zeros, oversize headers, and the stream that makes the decoder
    search its full buffer again every 9 bytes (frames that claim 1024 bytes, nested)."""
    nested = (bytes((0xA5, 1, 0x04, 0x00, 0, 0x10, 0, 0, 1)) * 400)
    cases = {
        "start bytes": [b"\xa5" * 1000] * 10,
        "zeros": [bytes(4096)] * 5,
        "oversize": [bytes((0xA5, 1, 0xFF, 0xFF, 0, 0x10, 0, 0, 1))] * 500,
        "nested 1 KB headers": [nested[i:i + 512] for i in range(0, len(nested), 512)],
        "version then nothing": [b"\xa5\x01"] * 1000,
    }
    for name, chunks in cases.items():
        stats = fuzz_public(chunks)
        print("%s: %d chunks, %d bytes answered, longest feed %.1f ms (CPython, viper as plain Python)"
              % (name, stats["chunks"], stats["answered"], stats["max_us"] / 1000))
        if name != "zeros":
            assert stats["answered"] > 0


# --- MicroPython, both lanes ---------------------------------------------------------------------------
MP_FUZZ = """
import mpt_console_kit as kit
def load(path):
    f = open(path, 'rb')
    data = f.read()
    f.close()
    out = []
    i = 0
    while i < len(data):
        n = (data[i] << 8) | data[i + 1]
        out.append(data[i + 2:i + 2 + n])
        i += 2 + n
    return out
import gc
public = load('public.bin')
gc.collect()
before = gc.mem_alloc()
stats = kit.fuzz_public(public)
gc.collect()
grown = gc.mem_alloc() - before
print('public: %d chunks, %d bytes answered, longest feed %d us, heap %d bytes above the start after it'
      % (stats['chunks'], stats['answered'], stats['max_us'], grown))
assert grown < 4096
public = None
seen, stats = kit.fuzz_session(load('session.bin'), SEED)
originals = set(open('originals.txt').read().split('\\n'))
assert len(set(seen)) == len(seen)
for p in seen:
    assert p.decode() in originals, p
print('session: %d of %d unmutated frames accepted, longest feed %d us' % (len(seen), len(originals),
      stats['max_us']))
assert len(seen) * 2 >= len(originals)
"""


def _write_chunks(path, chunks):
    with open(path, "wb") as f:
        for c in chunks:
            f.write(struct.pack(">H", len(c)) + c)


@pytest.mark.parametrize("lane", lanes())
def test_micropython_fuzz(tmp_path, lane):
    rng = random.Random(20261201)
    seed = b"mp fuzz"
    public = public_stream(rng, 2500)
    chunks, originals = session_stream(rng, seed, 1500)
    _write_chunks(tmp_path / "public.bin", public)
    _write_chunks(tmp_path / "session.bin", chunks)
    (tmp_path / "originals.txt").write_text("\n".join(p.decode() for p in originals))
    out = run_micropython(["-c", "SEED = %r\n" % seed + MP_FUZZ], cwd=str(tmp_path), binary=lane_binary(lane),
                          timeout=120 * LANE_SLOWDOWN[lane])
    print(lane, out)
    assert "session:" in out


MP_HYPOTHESIS = """
import mpt_console_kit as kit
f = open('public.bin', 'rb')
data = f.read()
f.close()
chunks = []
i = 0
while i < len(data):
    n = (data[i] << 8) | data[i + 1]
    chunks.append(data[i + 2:i + 2 + n])
    i += 2 + n
stats = kit.fuzz_public(chunks)
print('hypothesis example: %d chunks, longest feed %d us' % (stats['chunks'], stats['max_us']))
"""


@pytest.mark.parametrize("lane", lanes())
def test_micropython_hypothesis(tmp_path_factory, lane):
    """Hypothesis drives the console on the unix port: each example (random chunks plus mutated
    frames) is one MicroPython run."""

    @settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                    HealthCheck.function_scoped_fixture])
    @given(st.lists(st.binary(max_size=300), max_size=10), st.integers(0, 2 ** 32 - 1))
    def run(raw, seed):
        d = tmp_path_factory.mktemp("hyp")
        chunks = raw + public_stream(random.Random(seed), 60)
        _write_chunks(d / "public.bin", chunks)
        out = run_micropython(["-c", MP_HYPOTHESIS], cwd=str(d), binary=lane_binary(lane),
                              timeout=60 * LANE_SLOWDOWN[lane])
        assert "hypothesis example" in out

    run()
