"""Metering: viper kernels (kernels.py), the engine (engine.py), OBIS names (obis.py).
The load-profile record format is in PROFILE.md."""
