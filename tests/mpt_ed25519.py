# Ed25519 verification on the MicroPython unix port (both lanes): RFC 8032 7.1 vectors, sampled
# single-byte mutations, and the rule set of SIGNATURES.md (canonical S, A, R; small-order A, R refused).
import time

from mptest import raises
from sigvectors import ed25519_edge_cases, ed25519_vectors
from umeter.crypto import ed25519

IDENTITY = b"\x01" + bytes(31)  # y = 1: the neutral point, order 1


def _le(n):
    return bytes((n >> (8 * i)) & 0xFF for i in range(32))


def test_rfc8032_vectors():
    for name, pk, msg, sig in ed25519_vectors():
        t = time.ticks_us()
        assert ed25519.verify(pk, msg, sig) is True, name
        print("%s: %.1f ms" % (name, time.ticks_diff(time.ticks_us(), t) / 1000))
        assert ed25519.verify(pk, msg + b"\x00", sig) is False, name


def test_taming_the_many_eddsas_edge_cases():
    # our row must be libsodium's: only case 3 (mixed-order A and R, cofactorless equation true) passes
    verdicts = ""
    for name, pk, msg, sig, accept in ed25519_edge_cases():
        got = ed25519.verify(pk, msg, sig)
        verdicts += "V" if got else "X"
        assert got is accept, name
    assert verdicts == "XXXVXXXXXXXX"


def test_sampled_single_byte_mutations_rejected():
    for name, pk, msg, sig in ed25519_vectors()[1:4]:
        for pos in (0, 5, 31, 32, 40, 63):
            bad = bytearray(sig)
            bad[pos] ^= 0x01 << (pos % 8)
            assert not ed25519.verify(pk, msg, bytes(bad)), (name, "sig", pos)
        for pos in (0, 17, 31):
            bad = bytearray(pk)
            bad[pos] ^= 0x80 >> (pos % 8)
            assert not ed25519.verify(bytes(bad), msg, sig), (name, "pk", pos)
        if msg:
            bad = bytearray(msg)
            bad[len(msg) // 2] ^= 0x40
            assert not ed25519.verify(pk, bytes(bad), sig), (name, "msg")


def test_non_canonical_s_is_rejected():
    # S + L satisfies the group equation just as S does: accepting it would make signatures malleable
    for name, pk, msg, sig in ed25519_vectors():
        s = int.from_bytes(sig[32:], "little") + ed25519.L
        if s < 2 ** 256:
            assert not ed25519.verify(pk, msg, sig[:32] + _le(s)), name


def test_small_order_key_and_r_are_rejected():
    # A = R = identity, S = 0 satisfies [S]B = R + [k]A for every message: the classic forgery a bare
    # cofactorless check accepts; the same with A = R = the order-2 point (0, -1)
    order2 = _le(ed25519.P - 1)
    for point in (IDENTITY, order2):
        for msg in (b"", b"any message"):
            assert not ed25519.verify(point, msg, point + bytes(32))
    assert ed25519._is_small_order(ed25519._decode(IDENTITY))
    assert ed25519._is_small_order(ed25519._decode(order2))
    assert not ed25519._is_small_order(ed25519.BASE)


def test_non_canonical_encodings_are_refused_by_the_decoder():
    assert ed25519._decode(_le(ed25519.P + 1)) is None     # y = 1 + p (the identity, written long)
    assert ed25519._decode(_le(2 ** 255 - 1)) is None      # y = p + 18
    assert ed25519._decode(_le(1 | (1 << 255))) is None    # x = 0 with the sign bit set ("-0")
    assert ed25519._decode(_le(2)) is None                 # y = 2 is not on the curve
    name, pk, msg, sig = ed25519_vectors()[0]
    assert ed25519._decode(pk) is not None


def test_malformed_inputs_return_false_and_lengths_raise():
    name, pk, msg, sig = ed25519_vectors()[0]
    for junk in (bytes(64), b"\xff" * 64, bytes(range(64)), bytes(32) + b"\xff" * 32):
        assert ed25519.verify(pk, msg, junk) is False
        assert ed25519.verify(junk[:32], msg, sig) is False
    for bad_pk, bad_sig in ((pk[:31], sig), (pk + b"\x00", sig), (pk, sig[:63]), (pk, sig + b"\x00"),
                            (b"", b"")):
        with raises(ValueError):
            ed25519.verify(bad_pk, msg, bad_sig)
    assert ed25519.PUBLIC_KEY_SIZE == 32 and ed25519.SIGNATURE_SIZE == 64


def test_accepts_any_bytes_like_input():
    name, pk, msg, sig = ed25519_vectors()[2]
    for conv in (bytes, bytearray, memoryview):
        assert ed25519.verify(conv(pk), conv(msg), conv(sig)), conv
    framed = memoryview(b"hdr" + sig + b"trailer")
    assert ed25519.verify(pk, msg, framed[3:67])
