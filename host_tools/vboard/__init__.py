"""The virtual board runtime on the MicroPython unix port: its boot stage,
board filesystem and machine stand-in."""
