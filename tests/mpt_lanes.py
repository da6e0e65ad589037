# Each lane is the interpreter it claims to be: mp32 has the targets' 31-bit small ints, mp64 does not.
import os
import sys

import micropython


def test_lane_int_width_is_what_the_lane_says():
    lane = os.getenv("MPT_LANE")
    assert lane in ("mp64", "mp32"), lane
    assert sys.maxsize == (2147483647 if lane == "mp32" else 9223372036854775807), sys.maxsize
    big = 1 << 30  # a heap object exactly where the targets make one
    x = None
    micropython.heap_lock()
    try:
        try:
            x = big + 1
            allocated = False
        except MemoryError:
            allocated = True
    finally:
        micropython.heap_unlock()
    assert allocated == (lane == "mp32")
    assert x is None or x == big + 1
