"""Puts firmware/, host_tools/, boards/ and the CPython-only `micropython` shim on sys.path and loads
the MicroPython test plugin (tests/mpplugin.py)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

pytest_plugins = ["pytester", "mpplugin"]
