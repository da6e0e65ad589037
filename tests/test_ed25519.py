"""Ed25519 verification (firmware/umeter/crypto/ed25519.py): RFC 8032 vectors under CPython, and agreement
with `cryptography` on fresh keys and messages, under CPython (every single-byte mutation of signature,
key and message rejected) and on the MicroPython unix port, both lanes (sampled mutations)."""
import os
import random

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from hypothesis import given, settings, strategies as st

import mpplugin
from sigvectors import ed25519_edge_cases, ed25519_vectors
from umeter.crypto import ed25519


def _fresh(count, seed, lengths=(0, 1, 31, 64, 200, 1500)):
    rnd = random.Random(seed)
    out = []
    for i in range(count):
        key = Ed25519PrivateKey.generate()
        pk = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        msg = bytes(rnd.getrandbits(8) for _ in range(rnd.choice(lengths)))
        out.append((pk, msg, key.sign(msg)))
    return out


def _mutations(data, positions):
    for pos in positions:
        bad = bytearray(data)
        bad[pos] ^= 1 << (pos % 8)
        yield pos, bytes(bad)


def test_written_out_constants_are_rfc8032s():
    p = ed25519.P
    assert ed25519.D == -121665 * pow(121666, p - 2, p) % p
    assert ed25519.SQRT_M1 == pow(2, (p - 1) // 4, p) and ed25519.SQRT_M1 ** 2 % p == p - 1
    x, y, z, t = ed25519.BASE
    assert y == 4 * pow(5, p - 2, p) % p and z == 1 and t == x * y % p and x % 2 == 0
    assert ed25519._decode(y.to_bytes(32, "little")) == ed25519.BASE
    assert (-x * x + y * y - 1 - ed25519.D * x * x * y * y) % p == 0  # on the curve


def test_rfc8032_vectors_under_cpython():
    for name, pk, msg, sig in ed25519_vectors():
        assert ed25519.verify(pk, msg, sig), name


def _cryptography_accepts(pk, msg, sig):
    try:
        Ed25519PublicKey.from_public_bytes(pk).verify(sig, msg)
        return True
    except (InvalidSignature, ValueError):
        return False


def test_edge_cases_follow_the_documented_rule_set_stricter_than_openssl():
    cases = ed25519_edge_cases()
    ours = "".join("V" if ed25519.verify(pk, msg, sig) else "X" for _, pk, msg, sig, _ in cases)
    theirs = "".join("V" if _cryptography_accepts(pk, msg, sig) else "X" for _, pk, msg, sig, _ in cases)
    assert ours == "XXXVXXXXXXXX"
    # what the device accepts, the host library accepts too (SIGNATURES.md: OpenSSL is laxer)
    assert all(t == "V" for o, t in zip(ours, theirs) if o == "V")
    assert theirs == "VVVVXXXXXXXV"


def test_fresh_keys_agree_and_every_single_byte_mutation_is_rejected():
    for pk, msg, sig in _fresh(3, seed=1, lengths=(1, 31, 64, 100)):
        assert ed25519.verify(pk, msg, sig)
        for pos, bad in _mutations(sig, range(64)):
            assert not ed25519.verify(pk, msg, bad), ("sig", pos)
        for pos, bad in _mutations(pk, range(32)):
            assert not ed25519.verify(bad, msg, sig), ("pk", pos)
        for pos, bad in _mutations(msg, range(len(msg))):
            assert not ed25519.verify(pk, bad, sig), ("msg", pos)


@settings(max_examples=60, deadline=None)
@given(pk=st.binary(min_size=32, max_size=32), sig=st.binary(min_size=64, max_size=64),
       msg=st.binary(max_size=64))
def test_random_inputs_never_raise_and_are_rejected(pk, sig, msg):
    assert ed25519.verify(pk, msg, sig) is False


@pytest.mark.parametrize("lane", mpplugin.lanes())
def test_fresh_keys_agree_on_the_unix_port(lane, tmp_path):
    cases = _fresh(6, seed=int.from_bytes(os.urandom(4), "little"))
    lines = []
    for pk, msg, sig in cases:
        lines.append("C(%r, %r, %r)" % (pk.hex(), msg.hex(), sig.hex()))
    code = """
from binascii import unhexlify as u
from umeter.crypto import ed25519
def C(pk, msg, sig):
    pk, msg, sig = u(pk), u(msg), u(sig)
    ok = ed25519.verify(pk, msg, sig)
    rejected = 0
    for pos in range(0, 64, 7):
        bad = bytearray(sig); bad[pos] ^= 1 << (pos %% 8)
        rejected += not ed25519.verify(pk, msg, bytes(bad))
    for pos in (0, 13, 31):
        bad = bytearray(pk); bad[pos] ^= 1 << (pos %% 8)
        rejected += not ed25519.verify(bytes(bad), msg, sig)
    if msg:
        bad = bytearray(msg); bad[0] ^= 1
        rejected += not ed25519.verify(pk, bytes(bad), sig)
    print("RESULT", ok, rejected)
%s
""" % "\n".join(lines)
    out = mpplugin.run_micropython(["-c", code], binary=mpplugin.lane_binary(lane), cwd=str(tmp_path))
    results = [line.split()[1:] for line in out.splitlines() if line.startswith("RESULT")]
    assert len(results) == len(cases)
    for (pk, msg, sig), (ok, rejected) in zip(cases, results):
        assert ok == "True"
        assert int(rejected) == 10 + 3 + (1 if msg else 0)
