# Ed25519 signature verification (RFC 8032 5.1.7), verify only: the device never signs. Rule set, and why,
# in SIGNATURES.md. Arithmetic mod p = 2**255 - 19 on Python's arbitrary-precision ints (the ports have
# them), points in extended coordinates (RFC 8032 5.1.4), [S]B - [k]A by Straus/Shamir interleaving.
from umeter.crypto.sha512 import SHA512

PUBLIC_KEY_SIZE = 32
SIGNATURE_SIZE = 64

# RFC 8032 5.1 constants, written out: each pow() at import would cost the boot stage time on a board
# (tests/test_ed25519.py derives them again)
P = 2 ** 255 - 19
L = 2 ** 252 + 27742317777372353535851937790883648493  # order of the base point
D = 37095705934669439343138083508754565189542113879843219016388785533085940283555       # -121665/121666
D2 = 2 * D % P
SQRT_M1 = 19681161376707505956807079304988542015446066515923890162744021073123829784752  # 2^((p-1)/4)
BASE = (15112221349535400772501151409588531511454012693041857206046113283949847762202,
        46316835694926478169428394003475163141307993866256225615783033603165251855960, 1,
        46827403850823179245072216630277197565144205554125654976674165829533817101731)  # (x, 4/5, 1, xy)


def _decode(s):
    """RFC 8032 5.1.3 point decoding, strict: None unless s is the canonical encoding of a curve point
    (y < p; x = 0 only with the sign bit clear). Returns an extended point (X, Y, Z, T)."""
    y = int.from_bytes(s, "little")
    sign = y >> 255
    y &= (1 << 255) - 1
    if y >= P:
        return None
    yy = y * y % P
    u = (yy - 1) % P
    v = (D * yy + 1) % P
    # x = u v^3 (u v^7)^((p-5)/8), then fix the root by sqrt(-1) (RFC 8032 5.1.3 step 3)
    v3 = v * v % P * v % P
    x = u * v3 % P * pow(u * v3 % P * v3 % P * v % P, (P - 5) // 8, P) % P
    vxx = v * x % P * x % P
    if vxx != u:
        if vxx != P - u:
            return None  # (y^2 - 1) / (d y^2 + 1) is not a square: not on the curve
        x = x * SQRT_M1 % P
    if x == 0 and sign:
        return None
    if (x & 1) != sign:
        x = P - x
    return (x, y, 1, x * y % P)


def _add(p1, p2):
    # RFC 8032 5.1.4 addition (a = -1, complete)
    x1, y1, z1, t1 = p1
    x2, y2, z2, t2 = p2
    a = (y1 - x1) * (y2 - x2) % P
    b = (y1 + x1) * (y2 + x2) % P
    c = t1 * D2 % P * t2 % P
    d = 2 * z1 * z2 % P
    e, f, g, h = b - a, d - c, d + c, b + a
    return (e * f % P, g * h % P, f * g % P, e * h % P)


def _double(p1):
    # RFC 8032 5.1.4 doubling (T of the input unused)
    x1, y1, z1, _ = p1
    a = x1 * x1 % P
    b = y1 * y1 % P
    c = 2 * z1 * z1 % P
    h = a + b
    s = x1 + y1
    e = h - s * s % P
    g = a - b
    f = c + g
    return (e * f % P, g * h % P, f * g % P, e * h % P)


def _is_small_order(pt):
    # [8]P is the identity (X = 0, Y = Z) exactly for the 8 points of order dividing 8
    q = _double(_double(_double(pt)))
    return q[0] % P == 0 and (q[1] - q[2]) % P == 0


def _double_scalar(s, p1, k, p2):
    """[s]p1 + [k]p2, one shared doubling chain (Straus/Shamir): at each bit add p1, p2 or p1 + p2."""
    both = _add(p1, p2)
    acc = (0, 1, 1, 0)
    for i in range(252, -1, -1):  # s, k < L < 2**253
        acc = _double(acc)
        bits = ((s >> i) & 1) | (((k >> i) & 1) << 1)
        if bits == 1:
            acc = _add(acc, p1)
        elif bits == 2:
            acc = _add(acc, p2)
        elif bits == 3:
            acc = _add(acc, both)
    return acc


def verify(public_key, message, signature):
    """True if signature (64 bytes: R || S) is a valid Ed25519 signature of message under public_key
    (32 bytes), by the rules in SIGNATURES.md. False for any malformed key or signature of the right
    length; ValueError only for a wrong length."""
    if len(public_key) != PUBLIC_KEY_SIZE:
        raise ValueError("Ed25519 public key must be 32 bytes")
    if len(signature) != SIGNATURE_SIZE:
        raise ValueError("Ed25519 signature must be 64 bytes")
    s = int.from_bytes(signature[32:], "little")
    if s >= L:
        return False  # RFC 8032 5.1.7 step 1: S must be canonical (stops signature malleability)
    a = _decode(public_key)
    r = _decode(signature[:32])
    if a is None or r is None or _is_small_order(a) or _is_small_order(r):
        return False
    h = SHA512(signature[:32])
    h.update(public_key)
    h.update(message)
    k = int.from_bytes(h.digest(), "little") % L
    neg_a = (P - a[0], a[1], 1, P - a[3])
    q = _double_scalar(s, BASE, k, neg_a)  # [S]B - [k]A, compared with R projectively (R has Z = 1)
    x, y, z, _ = q
    return (x - r[0] * z) % P == 0 and (y - r[1] * z) % P == 0
