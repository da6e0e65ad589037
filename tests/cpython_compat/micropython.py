"""CPython stand-in for MicroPython's `micropython` module, used only by the test-suite so that
pure-logic firmware modules can also run (and be fuzzed) under CPython. Never deployed."""
import builtins


def const(x):
    return x


def native(f):
    return f


def viper(f):
    return f


def heap_lock():
    return 0


def heap_unlock():
    return 0


def mem_info(*args):
    pass


class _Ptr:
    """Annotation placeholder: viper's ptr8/ptr16/ptr32 casts only mean something to the viper emitter."""

    def __init__(self, obj):
        self.obj = obj


for _name in ("ptr8", "ptr16", "ptr32"):
    if not hasattr(builtins, _name):
        setattr(builtins, _name, _Ptr)
