"""The unix port's ``machine`` module plus ``reset()``, for the virtual board (installed as
sys.modules["machine"] by vboard/boardfs.py). MicroPython unix port only."""
import sys

from machine import *  # noqa: F401,F403

HARD_RESET_STATUS = 86  # same value as vboard/boardfs.py: the host boots the board again, main.py included


def reset():
    """Hard reset: the process ends and the virtual board host starts it again from power-on."""
    sys.exit(HARD_RESET_STATUS)
