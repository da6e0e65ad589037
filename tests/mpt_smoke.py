# The plumbing itself: these run on the MicroPython unix port.
import sys

import micropython
from mptest import raises


def test_runs_on_micropython():
    assert sys.implementation.name == "micropython"


def test_viper_emitter_available():
    @micropython.viper
    def add(a: int, b: int) -> int:
        return a + b

    assert add(2, 3) == 5


def test_raises_helper_catches_wrong_type():
    with raises(AssertionError):
        with raises(KeyError):
            pass
