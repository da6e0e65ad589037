"""Integer helpers of the window energy: float coefficients as integers with a shared binary
scale, and round-half-up division of exact integer sums. Pure logic (CPython tests fuzz them)."""
import math


def fixed(coefs):
    """Floats -> (integers, shift) with coef ~= int / 2**shift, the largest using ~30 bits.
    One frexp and one list: this runs once per window (PROFILE.md "Memory")."""
    big = 0.0
    for c in coefs:
        if c > big:
            big = c
        elif -c > big:
            big = -c
    if not big:
        return [0] * len(coefs), 0
    sh = 30 - math.frexp(big)[1]
    return [int(math.floor(math.ldexp(c, sh) + 0.5)) for c in coefs], sh


def div_round(num, sh, n):
    """round(num / (n * 2**sh)) for ints (sh may be negative)."""
    if sh >= 0:
        den = n << sh
    else:
        num <<= -sh
        den = n
    return (num + (den >> 1)) // den
