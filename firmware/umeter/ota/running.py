# Which slot this code was started from, without importing the slot machinery (umeter.ota.slots and its
# verifier and bundle parser: about 9 KB of heap on a 32-bit port). A development deploy runs from no slot.
import sys

NAMES = ("a", "b")


def running_slot():
    """The slot this code was started from (its directory first on sys.path), or None (development)."""
    first = sys.path[0] if sys.path else ""
    for i in range(2):
        if first.endswith("slot_" + NAMES[i]):
            return i
    return None
