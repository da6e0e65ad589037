"""Torture, soak and benchmark drivers that run on either interpreter
(CPython and the MicroPython unix port)."""
