# SHA-512 on the MicroPython unix port (both lanes): FIPS vectors, the viper compression against its
# plain-Python twin, streaming at every block boundary, and an allocation-free compression.
import micropython
from array import array

from sigvectors import sha512_vectors
from umeter.crypto import sha512
from umeter.crypto.sha512 import SHA512


def test_fips_vectors():
    for name, chunks, digest in sha512_vectors():
        h = SHA512()
        for piece in chunks():
            h.update(piece)
        assert h.digest() == digest, name
    assert sha512.sha512(b"abc") == sha512_vectors()[0][2]


def test_viper_matches_plain_twin_at_block_boundaries():
    data = bytes((i * 131 + 7) & 0xFF for i in range(400))
    for n in (0, 1, 55, 111, 112, 113, 127, 128, 129, 239, 240, 255, 256, 257, 400):
        fast = SHA512(data[:n], compress=sha512._compress_viper).digest()
        slow = SHA512(data[:n], compress=sha512._compress_py).digest()
        assert fast == slow, n
    # words with every high bit set exercise the carries and the 32-bit lane's sign handling
    ones = b"\xff" * 256
    assert SHA512(ones, compress=sha512._compress_viper).digest() == \
        SHA512(ones, compress=sha512._compress_py).digest()


def test_streaming_in_pieces_equals_one_shot():
    data = bytes((i * 37) & 0xFF for i in range(700))
    whole = SHA512(data).digest()
    for step in (1, 7, 64, 127, 128, 129, 300):
        h = SHA512()
        for i in range(0, len(data), step):
            h.update(data[i:i + step])
        assert h.digest() == whole, step
    h = SHA512(data[:200])
    h.digest()  # digest() leaves the object usable
    h.update(data[200:])
    assert h.digest() == whole
    assert SHA512(bytearray(data)).digest() == SHA512(memoryview(data)).digest() == whole


def test_compression_allocates_nothing():
    st = array("I", sha512._H0)
    w = array("I", bytes(640))
    block = bytes(range(128)) * 2
    micropython.heap_lock()
    try:
        sha512._compress_viper(st, w, sha512._K, block, 0, 2)
    finally:
        micropython.heap_unlock()
    ref = array("I", sha512._H0)
    sha512._compress_py(ref, w, sha512._K, block, 0, 2)
    assert list(st) == list(ref)
