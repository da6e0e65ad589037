"""Test boards for the app on the unix port: the same board contract as boards/*/board.py, built from
the simulators, with a private scratch directory. Used by tests/mpt_app.py."""
from sim.nor import NorFlash


class SampleBoard:
    """A sample-stream board (like `sim`) on an in-memory W25Q16JV-sized NorFlash."""

    NAME = "test-samples"
    DEVELOPMENT_KEY = False
    PARTITIONS = [("journal", 256 * 1024), ("state", 32 * 1024), ("ota", None)]
    CHECKPOINT_S = 10
    ENGINE = {"profile_min": 1, "demand_s": 10}
    CALIBRATION = {}

    def __init__(self, directory, scenario=None, flash=None, provision=True):
        from umeter.hal.keystore_file import open_keystore

        self.dir = directory
        self.scenario = scenario or {"vrms": 230.0, "irms": 5.0}
        self.dev = flash or NorFlash(2 * 1024 * 1024, seed=1)
        self.ks = open_keystore(directory + "/keys")
        if provision and not self.ks.provisioned:
            self.ks.provision(bytes(range(32)))
        self.pf_callback = None

    def flash(self):
        return self.dev

    def sampler(self):
        from sim.grid import Grid

        return Grid(self.scenario)

    def keystore(self):
        return self.ks

    def watchdog(self):
        return None

    def power_fail(self, callback):
        self.pf_callback = callback
        return True

    def start_background(self, step):
        raise AssertionError("tests drive the meter directly")


class IcBoard(SampleBoard):
    """An ATM90E32 board: the chip simulator on its SPI bus, one poll per simulated second."""

    NAME = "test-ic"

    def __init__(self, directory, chip_sim, clock):
        SampleBoard.__init__(self, directory)
        self.chip_sim = chip_sim
        self.clock = clock

    def sampler(self):
        from umeter.metering.ic_engine import IcTicker

        return IcTicker(ticks_ms=self.clock)

    def engine(self, src):
        from umeter.hal.atm90e32 import Atm90e32
        from umeter.metering.ic_engine import IcEngine

        chip = Atm90e32(self.chip_sim.spi, self.chip_sim.cs, phases=(0,))
        chip.configure()
        return IcEngine(chip, phase=0, **self.ENGINE)
