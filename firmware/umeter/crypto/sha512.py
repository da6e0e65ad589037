# SHA-512 (FIPS 180-4), because hashlib on the MicroPython ports has no sha512. Used by ed25519.py.
# A 64-bit word is kept as two 32-bit halves (hi, lo) in array("I"): on the 32-bit ports an int >= 2**30
# is a heap object, so the device compresses blocks in viper (machine words, no allocation); CPython and
# the reference-twin test use _compress_py, the plain FIPS text on Python ints.
import sys
from array import array

import micropython

IS_MICROPYTHON = sys.implementation.name == "micropython"
if not IS_MICROPYTHON:
    uint = int  # viper's cast: under CPython _compress_viper runs as plain Python (the twin tests use it)

DIGEST_SIZE = 64
BLOCK_SIZE = 128

# FIPS 180-4 5.3.5 and 4.2.3 (hi, lo halves): first 64 bits of the fractional parts of the square roots
# of the first 8 primes and of the cube roots of the first 80 primes.
_H0 = (
    0x6a09e667, 0xf3bcc908, 0xbb67ae85, 0x84caa73b, 0x3c6ef372, 0xfe94f82b, 0xa54ff53a, 0x5f1d36f1,
    0x510e527f, 0xade682d1, 0x9b05688c, 0x2b3e6c1f, 0x1f83d9ab, 0xfb41bd6b, 0x5be0cd19, 0x137e2179,
)
_K = array("I", (
    0x428a2f98, 0xd728ae22, 0x71374491, 0x23ef65cd, 0xb5c0fbcf, 0xec4d3b2f, 0xe9b5dba5, 0x8189dbbc,
    0x3956c25b, 0xf348b538, 0x59f111f1, 0xb605d019, 0x923f82a4, 0xaf194f9b, 0xab1c5ed5, 0xda6d8118,
    0xd807aa98, 0xa3030242, 0x12835b01, 0x45706fbe, 0x243185be, 0x4ee4b28c, 0x550c7dc3, 0xd5ffb4e2,
    0x72be5d74, 0xf27b896f, 0x80deb1fe, 0x3b1696b1, 0x9bdc06a7, 0x25c71235, 0xc19bf174, 0xcf692694,
    0xe49b69c1, 0x9ef14ad2, 0xefbe4786, 0x384f25e3, 0x0fc19dc6, 0x8b8cd5b5, 0x240ca1cc, 0x77ac9c65,
    0x2de92c6f, 0x592b0275, 0x4a7484aa, 0x6ea6e483, 0x5cb0a9dc, 0xbd41fbd4, 0x76f988da, 0x831153b5,
    0x983e5152, 0xee66dfab, 0xa831c66d, 0x2db43210, 0xb00327c8, 0x98fb213f, 0xbf597fc7, 0xbeef0ee4,
    0xc6e00bf3, 0x3da88fc2, 0xd5a79147, 0x930aa725, 0x06ca6351, 0xe003826f, 0x14292967, 0x0a0e6e70,
    0x27b70a85, 0x46d22ffc, 0x2e1b2138, 0x5c26c926, 0x4d2c6dfc, 0x5ac42aed, 0x53380d13, 0x9d95b3df,
    0x650a7354, 0x8baf63de, 0x766a0abb, 0x3c77b2a8, 0x81c2c92e, 0x47edaee6, 0x92722c85, 0x1482353b,
    0xa2bfe8a1, 0x4cf10364, 0xa81a664b, 0xbc423001, 0xc24b8b70, 0xd0f89791, 0xc76c51a3, 0x0654be30,
    0xd192e819, 0xd6ef5218, 0xd6990624, 0x5565a910, 0xf40e3585, 0x5771202a, 0x106aa070, 0x32bbd1b8,
    0x19a4c116, 0xb8d2d0c8, 0x1e376c08, 0x5141ab53, 0x2748774c, 0xdf8eeb99, 0x34b0bcb5, 0xe19b48a8,
    0x391c0cb3, 0xc5c95a63, 0x4ed8aa4a, 0xe3418acb, 0x5b9cca4f, 0x7763e373, 0x682e6ff3, 0xd6b2b8a3,
    0x748f82ee, 0x5defb2fc, 0x78a5636f, 0x43172f60, 0x84c87814, 0xa1f0ab72, 0x8cc70208, 0x1a6439ec,
    0x90befffa, 0x23631e28, 0xa4506ceb, 0xde82bde9, 0xbef9a3f7, 0xb2c67915, 0xc67178f2, 0xe372532b,
    0xca273ece, 0xea26619c, 0xd186b8c7, 0x21c0c207, 0xeada7dd6, 0xcde0eb1e, 0xf57d4f7f, 0xee6ed178,
    0x06f067aa, 0x72176fba, 0x0a637dc5, 0xa2c898a6, 0x113f9804, 0xbef90dae, 0x1b710b35, 0x131c471b,
    0x28db77f5, 0x23047d84, 0x32caab7b, 0x40c72493, 0x3c9ebe0a, 0x15c9bebc, 0x431d67c4, 0x9c100d4c,
    0x4cc5d4be, 0xcb3e42b6, 0x597f299c, 0xfc657e2a, 0x5fcb6fab, 0x3ad6faec, 0x6c44198c, 0x4a475817,

))


def _compress_py(st, w, k, buf, off, nblocks):
    """Reference twin: FIPS 180-4 6.4.2 on Python ints (w is unused; the schedule is a local list)."""
    m = 0xFFFFFFFFFFFFFFFF

    def rotr(x, n):
        return ((x >> n) | (x << (64 - n))) & m

    hv = [(st[2 * i] << 32) | st[2 * i + 1] for i in range(8)]
    for _ in range(nblocks):
        sched = [int.from_bytes(bytes(buf[off + 8 * t:off + 8 * t + 8]), "big") for t in range(16)]
        for t in range(16, 80):
            x, y = sched[t - 15], sched[t - 2]
            s0 = rotr(x, 1) ^ rotr(x, 8) ^ (x >> 7)
            s1 = rotr(y, 19) ^ rotr(y, 61) ^ (y >> 6)
            sched.append((s1 + sched[t - 7] + s0 + sched[t - 16]) & m)
        a, b, c, d, e, f, g, h = hv
        for t in range(80):
            t1 = (h + (rotr(e, 14) ^ rotr(e, 18) ^ rotr(e, 41)) + (g ^ (e & (f ^ g)))
                  + ((k[2 * t] << 32) | k[2 * t + 1]) + sched[t]) & m
            t2 = ((rotr(a, 28) ^ rotr(a, 34) ^ rotr(a, 39)) + ((a & b) | (c & (a | b)))) & m
            h, g, f, e, d, c, b, a = g, f, e, (d + t1) & m, c, b, a, (t1 + t2) & m
        hv = [(x + y) & m for x, y in zip(hv, (a, b, c, d, e, f, g, h))]
        off += BLOCK_SIZE
    for i in range(8):
        st[2 * i] = hv[i] >> 32
        st[2 * i + 1] = hv[i] & 0xFFFFFFFF


@micropython.viper
def _compress_viper(st: ptr32, w: ptr32, k: ptr32, buf: ptr8, off: int, nblocks: int):
    # Same steps as _compress_py on (hi, lo) halves. Viper words are 32-bit on the boards but 64-bit on
    # the x86-64 unix port, so every value is masked to 32 bits (M) before it is shifted right or
    # compared; a carry out of the low half is "sum < addend" on the masked sum.
    msk = (uint(0xFFFF) << 16) | uint(0xFFFF)
    while nblocks > 0:
        i = 0
        p = off
        while i < 32:
            w[i] = (buf[p] << 24) | (buf[p + 1] << 16) | (buf[p + 2] << 8) | buf[p + 3]
            i += 1
            p += 4
        while i < 160:  # i = 2t: W[t] = s1(W[t-2]) + W[t-7] + s0(W[t-15]) + W[t-16]
            xh = uint(w[i - 30])
            xl = uint(w[i - 29])
            s0h = (((xh >> 1) | (xl << 31)) ^ ((xh >> 8) | (xl << 24)) ^ (xh >> 7)) & msk
            s0l = (((xl >> 1) | (xh << 31)) ^ ((xl >> 8) | (xh << 24)) ^ ((xl >> 7) | (xh << 25))) & msk
            xh = uint(w[i - 4])
            xl = uint(w[i - 3])
            s1h = (((xh >> 19) | (xl << 13)) ^ ((xl >> 29) | (xh << 3)) ^ (xh >> 6)) & msk
            s1l = (((xl >> 19) | (xh << 13)) ^ ((xh >> 29) | (xl << 3)) ^ ((xl >> 6) | (xh << 26))) & msk
            lo = (s1l + uint(w[i - 13])) & msk
            hi = s1h + uint(w[i - 14])
            if lo < s1l:
                hi += 1
            x = lo
            lo = (x + s0l) & msk
            hi += s0h
            if lo < x:
                hi += 1
            x = lo
            lo = (x + uint(w[i - 31])) & msk
            hi += uint(w[i - 32])
            if lo < x:
                hi += 1
            w[i] = hi & msk
            w[i + 1] = lo
            i += 2
        ah = uint(st[0])
        al = uint(st[1])
        bh = uint(st[2])
        bl = uint(st[3])
        ch = uint(st[4])
        cl = uint(st[5])
        dh = uint(st[6])
        dl = uint(st[7])
        eh = uint(st[8])
        el = uint(st[9])
        fh = uint(st[10])
        fl = uint(st[11])
        gh = uint(st[12])
        gl = uint(st[13])
        hh = uint(st[14])
        hl = uint(st[15])
        i = 0
        while i < 160:
            # T1 = h + S1(e) + Ch(e, f, g) + K[t] + W[t]
            sh = (((eh >> 14) | (el << 18)) ^ ((eh >> 18) | (el << 14)) ^ ((el >> 9) | (eh << 23))) & msk
            sl = (((el >> 14) | (eh << 18)) ^ ((el >> 18) | (eh << 14)) ^ ((eh >> 9) | (el << 23))) & msk
            lo = (hl + sl) & msk
            hi = hh + sh
            if lo < hl:
                hi += 1
            x = lo
            lo = (x + (gl ^ (el & (fl ^ gl)))) & msk
            hi += gh ^ (eh & (fh ^ gh))
            if lo < x:
                hi += 1
            x = lo
            lo = (x + uint(k[i + 1])) & msk
            hi += uint(k[i])
            if lo < x:
                hi += 1
            x = lo
            lo = (x + uint(w[i + 1])) & msk
            hi += uint(w[i])
            if lo < x:
                hi += 1
            t1h = hi & msk
            t1l = lo
            # T2 = S0(a) + Maj(a, b, c)
            sh = (((ah >> 28) | (al << 4)) ^ ((al >> 2) | (ah << 30)) ^ ((al >> 7) | (ah << 25))) & msk
            sl = (((al >> 28) | (ah << 4)) ^ ((ah >> 2) | (al << 30)) ^ ((ah >> 7) | (al << 25))) & msk
            x = (al & bl) | (cl & (al | bl))
            lo = (sl + x) & msk
            hi = sh + ((ah & bh) | (ch & (ah | bh)))
            if lo < x:
                hi += 1
            hh = gh
            hl = gl
            gh = fh
            gl = fl
            fh = eh
            fl = el
            el = (dl + t1l) & msk  # e = d + T1
            eh = dh + t1h
            if el < t1l:
                eh += 1
            eh &= msk
            dh = ch
            dl = cl
            ch = bh
            cl = bl
            bh = ah
            bl = al
            al = (lo + t1l) & msk  # a = T1 + T2
            ah = hi + t1h
            if al < t1l:
                ah += 1
            ah &= msk
            i += 2
        # H += (a, ..., h)
        x = (uint(st[1]) + al) & msk
        st[0] = (uint(st[0]) + ah + (1 if x < al else 0)) & msk
        st[1] = x
        x = (uint(st[3]) + bl) & msk
        st[2] = (uint(st[2]) + bh + (1 if x < bl else 0)) & msk
        st[3] = x
        x = (uint(st[5]) + cl) & msk
        st[4] = (uint(st[4]) + ch + (1 if x < cl else 0)) & msk
        st[5] = x
        x = (uint(st[7]) + dl) & msk
        st[6] = (uint(st[6]) + dh + (1 if x < dl else 0)) & msk
        st[7] = x
        x = (uint(st[9]) + el) & msk
        st[8] = (uint(st[8]) + eh + (1 if x < el else 0)) & msk
        st[9] = x
        x = (uint(st[11]) + fl) & msk
        st[10] = (uint(st[10]) + fh + (1 if x < fl else 0)) & msk
        st[11] = x
        x = (uint(st[13]) + gl) & msk
        st[12] = (uint(st[12]) + gh + (1 if x < gl else 0)) & msk
        st[13] = x
        x = (uint(st[15]) + hl) & msk
        st[14] = (uint(st[14]) + hh + (1 if x < hl else 0)) & msk
        st[15] = x
        off += 128
        nblocks -= 1


_compress = _compress_viper if IS_MICROPYTHON else _compress_py


class SHA512:
    """hashlib-style SHA-512: SHA512(data=b""), update(data), digest() (may be called, then updated)."""

    digest_size = DIGEST_SIZE
    block_size = BLOCK_SIZE

    def __init__(self, data=b"", compress=None):
        # compress: _compress_py or _compress_viper (tests compare the twins); None = the fast one here
        self._compress = compress or _compress
        self._state = array("I", _H0)
        self._sched = array("I", bytes(4 * 160)) if IS_MICROPYTHON else array("I", [0] * 160)
        self._buf = bytearray(BLOCK_SIZE)
        self._fill = 0
        self._length = 0  # bytes hashed so far
        if data:
            self.update(data)

    def update(self, data):
        data = memoryview(data)
        n = len(data)
        self._length += n
        pos = 0
        if self._fill:
            take = min(BLOCK_SIZE - self._fill, n)
            self._buf[self._fill:self._fill + take] = data[:take]
            self._fill += take
            pos = take
            if self._fill < BLOCK_SIZE:
                return
            self._compress(self._state, self._sched, _K, self._buf, 0, 1)
            self._fill = 0
        whole = (n - pos) // BLOCK_SIZE
        if whole:  # straight from the caller's buffer, no copy
            self._compress(self._state, self._sched, _K, data, pos, whole)
            pos += whole * BLOCK_SIZE
        rest = n - pos
        if rest:
            self._buf[:rest] = data[pos:]
            self._fill = rest

    def digest(self):
        # Pad a copy (FIPS 180-4 5.1.2: 0x80, zeros, 128-bit big-endian bit length); self stays usable.
        st = array("I", self._state)
        tail = bytearray(2 * BLOCK_SIZE)
        tail[:self._fill] = self._buf[:self._fill]
        tail[self._fill] = 0x80
        nblocks = 1 if self._fill < BLOCK_SIZE - 16 else 2
        bits = self._length * 8
        end = nblocks * BLOCK_SIZE
        for i in range(16):
            tail[end - 1 - i] = (bits >> (8 * i)) & 0xFF
        self._compress(st, self._sched, _K, tail, 0, nblocks)
        out = bytearray(DIGEST_SIZE)
        for i in range(16):
            v = st[i]
            out[4 * i] = v >> 24
            out[4 * i + 1] = (v >> 16) & 0xFF
            out[4 * i + 2] = (v >> 8) & 0xFF
            out[4 * i + 3] = v & 0xFF
        return bytes(out)

    def hexdigest(self):
        return "".join("%02x" % b for b in self.digest())


def sha512(data=b""):
    return SHA512(data).digest()
