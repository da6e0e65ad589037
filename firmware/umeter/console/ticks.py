# Millisecond ticks for the console's timers: MicroPython's wrap-safe ticks, or a CPython stand-in so the
# pure-logic modules run under hypothesis.
try:
    from time import ticks_diff, ticks_ms
except ImportError:  # CPython
    import time as _time

    def ticks_ms():
        return int(_time.monotonic() * 1000)

    def ticks_diff(a, b):
        return a - b
