"""xorshift32 (Marsaglia 2003): a tiny generator that gives the same sequence on CPython and
MicroPython, so simulations and torture runs are reproducible on both. Callers seed it by choosing
the (non-zero) 32-bit start state."""


class XorShift32:
    def __init__(self, state):
        self.s = state & 0xFFFFFFFF or 0x6D2B79F5

    def next(self):
        x = self.s
        x ^= (x << 13) & 0xFFFFFFFF
        x ^= x >> 17
        x ^= (x << 5) & 0xFFFFFFFF
        self.s = x
        return x

    def below(self, n):
        return self.next() % n if n > 0 else 0

    def fill(self, n):
        """n pseudo-random bytes (four per draw, low byte first)."""
        b = bytearray(n)
        for i in range(0, n, 4):
            x = self.next()
            for j in range(i, min(i + 4, n)):
                b[j] = x & 0xFF
                x >>= 8
        return bytes(b)
