"""Import the firmware's pure-logic modules (store.journal, records, metering.engine, hal.keystore) under
CPython, so the host parses exactly what the device writes, with the device's own code.

    from meterctl import mpcompat
    mpcompat.install()                    # idempotent
    from umeter.store.journal import Journal

install() puts <repo>/firmware on sys.path (if `umeter` is not importable yet) and, only when no real
`micropython` module can be imported, a minimal stand-in: const() returns its argument, native/viper are
no-op decorators, heap_lock/heap_unlock do nothing, and the viper pointer casts ptr8/ptr16/ptr32 exist as
builtins (viper functions use them in annotations, which CPython evaluates at definition time). Viper
functions then run as plain Python; the host only uses the pure-logic parts."""
import builtins
import importlib.util
import sys
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FIRMWARE = ROOT / "firmware"


class _Ptr:
    """Annotation placeholder for viper's pointer casts (meaningless outside the viper emitter)."""

    def __init__(self, obj):
        self.obj = obj


def _identity(x):
    return x


def _zero(*_args):
    return 0


def _stand_in():
    mod = types.ModuleType("micropython")
    mod.__doc__ = "meterctl's CPython stand-in for MicroPython's micropython module (host only)"
    mod.const = _identity
    mod.native = _identity
    mod.viper = _identity
    mod.heap_lock = _zero
    mod.heap_unlock = _zero
    mod.mem_info = _zero
    mod.meterctl_stand_in = True
    return mod


def install():
    """Make `import umeter...` work under CPython; returns the firmware directory."""
    if "micropython" not in sys.modules and importlib.util.find_spec("micropython") is None:
        sys.modules["micropython"] = _stand_in()
    for name in ("ptr8", "ptr16", "ptr32"):
        if not hasattr(builtins, name):
            setattr(builtins, name, _Ptr)
    if importlib.util.find_spec("umeter") is None:
        sys.path.insert(0, str(FIRMWARE))
    return FIRMWARE
