"""Metering: viper kernels (kernels.py, plain twins in kernels_ref.py), blocks -> whole-cycle windows
(windows.py), the engine (engine.py: powers, registers), the load profile (profile.py), the metering-IC
stand-in (ic_engine.py), OBIS names (obis.py), range-checked record packing (packing.py).
The load-profile record format and the engine's memory figures are in PROFILE.md."""
