"""SHA-512 (firmware/umeter/crypto/sha512.py) under CPython: both compression twins against hashlib,
fuzzed over lengths and split points; the FIPS vector file against hashlib (guards its transcription)."""
import hashlib

from hypothesis import given, settings, strategies as st

from sigvectors import sha512_vectors
from umeter.crypto import sha512
from umeter.crypto.sha512 import SHA512

TWINS = (sha512._compress_py, sha512._compress_viper)


def test_vector_file_agrees_with_hashlib_and_firmware():
    for name, chunks, digest in sha512_vectors():
        ref = hashlib.sha512()
        ours = SHA512()
        for piece in chunks():
            ref.update(piece)
            ours.update(piece)
        assert ref.digest() == digest, name
        assert ours.digest() == digest, name


@settings(max_examples=150, deadline=None)
@given(data=st.binary(max_size=600), cuts=st.lists(st.integers(0, 600), max_size=4),
       twin=st.sampled_from(TWINS))
def test_matches_hashlib_for_any_split(data, cuts, twin):
    h = SHA512(compress=twin)
    pos = 0
    for cut in sorted(c for c in cuts if c <= len(data)):
        h.update(data[pos:cut])
        pos = cut
    h.update(data[pos:])
    assert h.digest() == hashlib.sha512(data).digest()
    assert h.hexdigest() == hashlib.sha512(data).hexdigest()


def test_every_length_around_the_padding_boundaries():
    data = bytes(range(256)) * 2
    for twin in TWINS:
        for n in list(range(100, 140)) + list(range(230, 260)):
            assert SHA512(data[:n], compress=twin).digest() == hashlib.sha512(data[:n]).digest(), n
