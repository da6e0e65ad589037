# Test-vector files for the signature tests (tests/fixtures/*.txt), read the same way under CPython and on
# the MicroPython unix port: "|"-separated hex fields, "#" comment lines.
from binascii import unhexlify

_HERE = __file__.rsplit("/", 1)[0] if "/" in __file__ else "."


def fixture_path(name):
    return _HERE + "/fixtures/" + name


def rows(name):
    with open(fixture_path(name)) as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#"):
                yield [field.strip() for field in line.split("|")]


def sha512_vectors():
    """[(name, chunks, digest)]: chunks() yields the message in pieces (the million-'a' one in 1,000s)."""
    out = []
    for name, message, digest in rows("fips180_sha512.txt"):
        if message.startswith("REPEAT:"):
            _, count, byte = message.split(":")
            chunk = unhexlify(byte) * 1000

            def chunks(chunk=chunk, n=int(count) // 1000):
                for _ in range(n):
                    yield chunk
        else:
            def chunks(data=unhexlify(message)):
                yield data
        out.append((name, chunks, unhexlify(digest)))
    return out


def ed25519_vectors():
    """[(name, public_key, message, signature)] from RFC 8032 section 7.1."""
    return [(name, unhexlify(pk), unhexlify(msg), unhexlify(sig))
            for name, _sk, pk, msg, sig in rows("rfc8032_ed25519.txt")]


def hss_vectors():
    """[(name, hss_public_key, message, hss_signature)] from RFC 8554 Appendix F (both L = 2)."""
    return [(name, unhexlify(pk), unhexlify(msg), unhexlify(sig))
            for name, pk, msg, sig in rows("rfc8554_hss.txt")]


def hss_levels(public_key, message, signature, lms):
    """Split an HSS (public key, message, signature) into its single-tree LMS steps:
    [(lms_public_key, signed_message, lms_signature)], top level first (RFC 8554 6.3 layout)."""
    levels = public_key[3]
    key = public_key[4:]
    off = 4
    steps = []
    for _ in range(levels - 1):
        size = lms._lms_signature_length(signature, off)
        child = signature[off + size:off + size + lms.PUBLIC_KEY_SIZE]
        steps.append((key, child, signature[off:off + size]))
        key = child
        off += size + lms.PUBLIC_KEY_SIZE
    steps.append((key, message, signature[off:]))
    return steps


def ed25519_edge_cases():
    """[(name, public_key, message, signature, accept)] from "Taming the many EdDSAs" (cases 0..11)."""
    return [(name, unhexlify(pk), unhexlify(msg), unhexlify(sig), verdict == "V")
            for name, pk, msg, sig, verdict in rows("ed25519_speccheck.txt")]
