# LMS verification on the MicroPython unix port (both lanes): RFC 8554 Appendix F (as HSS, and each level
# as the single-tree LMS signature it is), sampled single-byte mutations, malformed input, costs.
import time

from mptest import raises
from sigvectors import hss_levels, hss_vectors
from umeter.crypto import lms


def _levels():
    out = []
    for name, pk, msg, sig in hss_vectors():
        for i, step in enumerate(hss_levels(pk, msg, sig, lms)):
            out.append(("%s level %d" % (name, i),) + step)
    return out


def test_rfc8554_appendix_f_as_hss():
    for name, pk, msg, sig in hss_vectors():
        t = time.ticks_us()
        assert lms.verify_hss(pk, msg, sig) is True, name
        print("%s (HSS, L=2): %.1f ms" % (name, time.ticks_diff(time.ticks_us(), t) / 1000))
        assert lms.verify_hss(pk, msg[:-1], sig) is False, name


def test_rfc8554_levels_as_single_tree_lms():
    seen = set()
    for name, key, msg, sig in _levels():
        ok, cost = lms.verify_with_cost(key, msg, sig)
        assert ok, name
        seen.add(lms.public_key_info(key))
        print("%s %s: %d SHA-256 compressions" % (name, lms.public_key_info(key), cost))
    # Test Case 2's top level is the default parameter set; Test Case 1 is H5/W8 on both levels
    assert (lms.LMS_SHA256_M32_H10, lms.LMOTS_SHA256_N32_W4) in seen
    assert (lms.LMS_SHA256_M32_H5, lms.LMOTS_SHA256_N32_W8) in seen


def test_sampled_single_byte_mutations_rejected():
    for name, key, msg, sig in _levels()[1:3]:
        n = len(sig)
        # q, the LM-OTS type, C, first and last y, the LMS type, the path
        for pos in (0, 3, 7, 8, 39, 40, n // 2, n - 32 * 5 - 5, n - 32 * 5 - 1, n - 33, n - 1):
            bad = bytearray(sig)
            bad[pos] ^= 1 << (pos % 8)
            assert not lms.verify(key, msg, bytes(bad)), (name, pos)
        for pos in (3, 7, 8, 23, 24, 55):
            bad = bytearray(key)
            bad[pos] ^= 0x10
            assert not lms.verify(bytes(bad), msg, sig), (name, "key", pos)
        bad = bytearray(msg)
        bad[0] ^= 0x01
        assert not lms.verify(key, bytes(bad), sig), name


def test_malformed_signatures_return_false():
    name, key, msg, sig = _levels()[1]
    for bad in (b"", sig[:7], sig[:-1], sig + b"\x00", bytes(len(sig)), b"\xff" * len(sig)):
        assert lms.verify(key, msg, bad) is False
    # q = 2^h (past the last leaf), with everything else intact
    height = 10 if lms.public_key_info(key)[0] == lms.LMS_SHA256_M32_H10 else 5
    q = (1 << height).to_bytes(4, "big")
    assert lms.verify(key, msg, q + sig[4:]) is False
    # a key of an unknown type verifies nothing, and says so in public_key_info
    odd_key = b"\x00\x00\x00\x0e" + key[4:]
    assert lms.verify(odd_key, msg, sig) is False
    with raises(ValueError):
        lms.public_key_info(odd_key)
    for bad_key in (key[:-1], key + b"\x00", b""):
        with raises(ValueError):
            lms.verify(bad_key, msg, sig)
    with raises(ValueError):
        lms.verify_hss(key, msg, sig)


def test_sizes_and_type_codes():
    assert lms.signature_size(lms.LMS_SHA256_M32_H10, lms.LMOTS_SHA256_N32_W4) == 2508
    assert lms.DEFAULT_SIGNATURE_SIZE == 2508
    assert lms.signature_size(lms.LMS_SHA256_M32_H10, lms.LMOTS_SHA256_N32_W8) == 1452
    assert (lms.LMS_SHA256_M32_H5, lms.LMS_SHA256_M32_H25) == (5, 9)
    assert (lms.LMOTS_SHA256_N32_W1, lms.LMOTS_SHA256_N32_W8) == (1, 4)
    assert lms.PUBLIC_KEY_SIZE == 56 and lms.HSS_PUBLIC_KEY_SIZE == 60


def test_accepts_any_bytes_like_input():
    name, key, msg, sig = _levels()[1]
    for conv in (bytes, bytearray, memoryview):
        assert lms.verify(conv(key), conv(msg), conv(sig)), conv
    framed = memoryview(b"hdr" + sig + b"trailer")
    assert lms.verify(key, msg, framed[3:3 + len(sig)])
