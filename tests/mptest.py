# Small helpers for MicroPython test modules (they also work under CPython).
import os


def tmpdir():
    """A scratch directory private to this test (set by the pytest plugin)."""
    return os.getenv("MPT_TMPDIR") or "/tmp"


class raises:
    """Context manager: `with raises(ValueError): ...` fails unless the block raises that type."""

    def __init__(self, exc_type, match=None):
        self.exc_type = exc_type
        self.match = match
        self.value = None

    def __enter__(self):
        return self

    def __exit__(self, typ, value, tb):
        if typ is None:
            raise AssertionError("expected %s, nothing was raised" % self.exc_type.__name__)
        if not issubclass(typ, self.exc_type):
            return False  # let the unexpected exception through, traceback intact
        if self.match is not None and self.match not in str(value):
            raise AssertionError("%s raised, but %r not in %r" % (typ.__name__, self.match, str(value)))
        self.value = value
        return True
