"""Test plumbing: run firmware on the real MicroPython unix port, and pure logic under CPython.

MicroPython test modules are files named ``mpt_*.py`` anywhere under tests/. Each top-level
``def test_*()`` in them becomes one pytest item that runs in its own ``micropython`` process with
firmware/, host_tools/ and boards/ on MICROPYPATH. A module may set ``HEAPSIZE = "8M"`` and
``TIMEOUT = 600`` at top level. A MicroPython traceback becomes a pytest failure showing it.

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


def run_micropython(args, heapsize=DEFAULT_HEAPSIZE, timeout=DEFAULT_TIMEOUT, extra_path=(), env=None,
                    cwd=None, stdin=None):
    """Run the unix port with ``args`` (a script path and its arguments, or ["-c", code]).
    Returns stdout+stderr; raises MicroPythonError with the full output on failure."""
    full_env = dict(os.environ)
    full_env["MICROPYPATH"] = micropython_path(extra_path)
    full_env.update(env or {})
    cmd = [MICROPYTHON, "-X", "heapsize=" + heapsize] + list(args)
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


class MicroPythonFile(pytest.File):
    def collect(self):
        tree = ast.parse(self.path.read_text(), filename=str(self.path))
        settings = _module_settings(tree)
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
                yield MicroPythonItem.from_parent(self, name=node.name, settings=settings, lineno=node.lineno)


class MicroPythonItem(pytest.Item):
    def __init__(self, *, settings, lineno, **kwargs):
        super().__init__(**kwargs)
        self.settings = settings
        self.lineno = lineno
        self.add_marker("micropython")

    def runtest(self):
        tmp = self.config._tmp_path_factory.mktemp(self.name[:30])
        output = run_micropython(
            [str(TESTS / "mp_runner.py"), self.path.stem, self.name],
            heapsize=str(self.settings["HEAPSIZE"]), timeout=int(self.settings["TIMEOUT"]),
            extra_path=[self.path.parent], env={"MPT_TMPDIR": str(tmp)}, cwd=str(tmp))
        if "MPT-PASS" not in output:
            raise MicroPythonError("test did not finish\n" + output)
        self.user_properties.append(("output", output))

    def repr_failure(self, excinfo):
        if isinstance(excinfo.value, MicroPythonError):
            return "MicroPython (unix port) test failed: %s" % excinfo.value
        return super().repr_failure(excinfo)

    def reportinfo(self):
        return self.path, self.lineno - 1, "[micropython] %s::%s" % (self.path.name, self.name)


def pytest_collect_file(file_path, parent):
    if file_path.suffix == ".py" and file_path.name.startswith("mpt_"):
        return MicroPythonFile.from_parent(parent, path=file_path)


def pytest_configure(config):
    config.addinivalue_line("markers", "micropython: runs on the MicroPython unix port")


class _NotForCPython(pytest.File):
    """What pytest's Python collector gets for an mpt_ file named on the command line: nothing."""

    def collect(self):
        return []


def pytest_pycollect_makemodule(module_path, parent):
    if module_path.name.startswith("mpt_"):
        return _NotForCPython.from_parent(parent, path=module_path)
