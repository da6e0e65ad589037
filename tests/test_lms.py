"""LMS verification (firmware/umeter/crypto/lms.py) against pyhsslms 2.0.0: RFC 8554 Appendix F under
CPython; fresh keys and messages for every LM-OTS type (H5) and the default H10/W4, verified under CPython
(every single-byte mutation of signature, key and message rejected for H5/W4) and on the MicroPython
unix port, both lanes (sampled mutations); the compression count checked by counting real SHA-256 work."""
import hashlib
import json
import os
import random

import pyhsslms
import pytest
from hypothesis import given, settings, strategies as st

import mpplugin
from sigvectors import hss_levels, hss_vectors
from umeter.crypto import lms

OTS_TYPES = {getattr(lms, "LMOTS_SHA256_N32_W%d" % w): getattr(pyhsslms, "lmots_sha256_n32_w%d" % w)
             for w in (1, 2, 4, 8)}
LMS_TYPES = {getattr(lms, "LMS_SHA256_M32_H%d" % h): getattr(pyhsslms, "lms_sha256_m32_h%d" % h)
             for h in (5, 10, 15, 20, 25)}


@pytest.fixture(scope="module")
def keys():
    """Fresh LMS keys: H5 with every LM-OTS type, and the default H10/W4 (pyhsslms builds whole trees)."""
    out = {}
    for ots in OTS_TYPES:
        out[(lms.LMS_SHA256_M32_H5, ots)] = pyhsslms.LmsPrivateKey(LMS_TYPES[lms.LMS_SHA256_M32_H5],
                                                                   OTS_TYPES[ots])
    out[(lms.LMS_SHA256_M32_H10, lms.LMOTS_SHA256_N32_W4)] = pyhsslms.LmsPrivateKey(
        LMS_TYPES[lms.LMS_SHA256_M32_H10], OTS_TYPES[lms.LMOTS_SHA256_N32_W4])
    return out


def _signed(keys, count_per_key, seed):
    rnd = random.Random(seed)
    cases = []
    for key in keys.values():
        pk = key.publicKey().serialize()
        for _ in range(count_per_key):
            msg = bytes(rnd.getrandbits(8) for _ in range(rnd.choice((0, 1, 32, 100, 700))))
            cases.append((pk, msg, key.sign(msg)))
    return cases


def _mutate(data, pos):
    bad = bytearray(data)
    bad[pos] ^= 1 << (pos % 8)
    return bytes(bad)


def test_type_codes_are_the_rfcs():
    for ours, theirs in list(OTS_TYPES.items()) + list(LMS_TYPES.items()):
        assert ours == int.from_bytes(theirs, "big")
    assert (lms.DEFAULT_LMS_TYPE, lms.DEFAULT_OTS_TYPE) == (6, 3)


def test_rfc8554_vectors_under_cpython_and_pyhsslms_agrees():
    for name, pk, msg, sig in hss_vectors():
        assert pyhsslms.HssPublicKey.deserialize(pk).verify(msg, sig), name
        assert lms.verify_hss(pk, msg, sig), name
        for key, signed, level_sig in hss_levels(pk, msg, sig, lms):
            assert lms.verify(key, signed, level_sig), name
            assert pyhsslms.LmsPublicKey.deserialize(key).verify(signed, level_sig), name


def test_fresh_keys_every_type_verify(keys):
    for pk, msg, sig in _signed(keys, 2, seed=5):
        assert lms.verify(pk, msg, sig)
        assert len(sig) == lms.signature_size(*lms.public_key_info(pk))
        assert not lms.verify(pk, msg + b"\x00", sig)


def test_every_single_byte_mutation_rejected_h5_w4(keys):
    key = keys[(lms.LMS_SHA256_M32_H5, lms.LMOTS_SHA256_N32_W4)]
    pk = key.publicKey().serialize()
    for msg in (b"firmware manifest 1.2.3", bytes(range(64))):
        sig = key.sign(msg)
        assert lms.verify(pk, msg, sig)
        for pos in range(len(sig)):
            assert not lms.verify(pk, msg, _mutate(sig, pos)), ("sig", pos)
        for pos in range(len(pk)):
            assert not lms.verify(_mutate(pk, pos), msg, sig), ("pk", pos)
        for pos in range(len(msg)):
            assert not lms.verify(pk, _mutate(msg, pos), sig), ("msg", pos)


def test_hss_one_and_two_levels_from_pyhsslms():
    for levels in (1, 2):
        key = pyhsslms.HssPrivateKey(levels=levels, lms_type=pyhsslms.lms_sha256_m32_h5,
                                     lmots_type=pyhsslms.lmots_sha256_n32_w8)
        pk = key.publicKey().serialize()
        sig = key.sign(b"bundle")
        assert lms.verify_hss(pk, b"bundle", sig)
        assert not lms.verify_hss(pk, b"bundlE", sig)
        assert not lms.verify_hss(pk, b"bundle", sig[:-1])
        if levels == 1:  # L = 1: the HSS encoding is the LMS one with two u32 prefixes
            assert lms.verify(pk[4:], b"bundle", sig[4:])


_REAL_SHA256 = hashlib.sha256


class _CountingSha256:
    """hashlib.sha256 stand-in that counts compressions from the bytes actually hashed."""

    total = 0

    def __init__(self, data=b""):
        self._h = _REAL_SHA256()
        self._n = 0
        self.update(data)

    def update(self, data):
        self._n += len(data)
        self._h.update(data)

    def digest(self):
        _CountingSha256.total += (self._n + 8) // 64 + 1
        return self._h.digest()


def test_compression_count_matches_the_hashing_done(keys, monkeypatch):
    monkeypatch.setattr(lms.hashlib, "sha256", _CountingSha256)
    for pk, msg, sig in _signed(keys, 2, seed=9):
        _CountingSha256.total = 0
        ok, cost = lms.verify_with_cost(pk, msg, sig)
        assert ok and cost == _CountingSha256.total


@settings(max_examples=40, deadline=None)
@given(body=st.binary(min_size=2508 - 8, max_size=2508 - 8), q=st.integers(0, 2 ** 32 - 1))
def test_random_well_typed_signatures_never_raise(body, q):
    pk = b"\x00\x00\x00\x06\x00\x00\x00\x03" + bytes(range(48))
    sig = q.to_bytes(4, "big") + b"\x00\x00\x00\x03" + body
    assert lms.verify(pk, b"m", sig) is False


@pytest.mark.parametrize("lane", mpplugin.lanes())
def test_fresh_keys_agree_on_the_unix_port(keys, lane, tmp_path):
    cases = _signed(keys, 1, seed=int.from_bytes(os.urandom(4), "little"))
    (tmp_path / "cases.json").write_text(json.dumps([[c.hex() for c in case] for case in cases]))
    script = tmp_path / "check.py"
    script.write_text("""
import json
from binascii import unhexlify as u
from umeter.crypto import lms
for pk, msg, sig in json.load(open("cases.json")):
    pk, msg, sig = u(pk), u(msg), u(sig)
    ok, cost = lms.verify_with_cost(pk, msg, sig)
    rejected = 0
    for pos in range(0, len(sig), len(sig) // 12):
        bad = bytearray(sig); bad[pos] ^= 1 << (pos % 8)
        rejected += not lms.verify(pk, msg, bytes(bad))
    bad = bytearray(pk); bad[30] ^= 4
    rejected += not lms.verify(bytes(bad), msg, sig)
    print("RESULT", ok, cost, rejected, len(range(0, len(sig), len(sig) // 12)) + 1)
""")
    out = mpplugin.run_micropython([str(script)], binary=mpplugin.lane_binary(lane), cwd=str(tmp_path))
    results = [line.split()[1:] for line in out.splitlines() if line.startswith("RESULT")]
    assert len(results) == len(cases)
    for (pk, msg, sig), (ok, cost, rejected, tried) in zip(cases, results):
        assert ok == "True"
        assert int(cost) == lms.verify_with_cost(pk, msg, sig)[1]  # same work on both interpreters
        assert rejected == tried
