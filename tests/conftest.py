"""Loads the MicroPython test plugin (tests/mpplugin.py), which puts firmware/, host_tools/ and boards/
on sys.path with meterctl.mpcompat's `micropython` stand-in."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

pytest_plugins = ["pytester", "mpplugin"]
