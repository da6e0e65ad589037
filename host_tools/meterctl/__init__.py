"""meterctl: host tools for umeter (deploy, provision, export, OTA, simulation, checks)."""
__version__ = "0.1.0"
