"""struct.pack that refuses a value its field cannot hold.

MicroPython's struct.pack keeps the low bytes of an integer that does not fit (CPython raises), so
a register past 2**64 or a negative count would be stored as a different, plausible number. Every
record encoder goes through pack() here: integer fields are range-checked first, on both
interpreters, and a value out of range raises ValueError naming the field. Pure logic; not for hot
loops (it parses the format on every call)."""
import struct

_BITS = {"B": 8, "H": 16, "I": 32, "L": 32, "Q": 64, "b": -8, "h": -16, "i": -32, "l": -32, "q": -64}


def limits(code):
    """(lowest, highest) value of a struct integer code, e.g. "Q" -> (0, 2**64 - 1)."""
    bits = _BITS[code]
    if bits > 0:
        return 0, (1 << bits) - 1
    half = 1 << (-bits - 1)
    return -half, half - 1


def pack(fmt, *values):
    """struct.pack(fmt, *values) for formats of single-letter codes after a byte-order mark, e.g.
    "<BBQQI", that first checks every integer field (type and range)."""
    codes = fmt[1:] if fmt[0] in "<>!=@" else fmt
    if len(codes) != len(values):
        raise ValueError("%d values for %d fields" % (len(values), len(codes)))
    for k in range(len(codes)):
        code = codes[k]
        if code in _BITS:
            v = values[k]
            if not isinstance(v, int) or isinstance(v, bool):
                raise ValueError("field %d (%s) must be an int, not %r" % (k, code, v))
            lo, hi = limits(code)
            if v < lo or v > hi:
                raise ValueError("field %d (%s) = %d does not fit %d..%d" % (k, code, v, lo, hi))
    return struct.pack(fmt, *values)
