# Runs one test function of a MicroPython test module (tests/**/mpt_*.py) on the unix port.
# Usage: micropython mp_runner.py MODULE FUNCTION.  A traceback and exit status 1 mean failure.
import sys

module = __import__(sys.argv[1])
getattr(module, sys.argv[2])()
print("MPT-PASS")
