"""Board `sim`: the virtual board. The real firmware on the MicroPython unix port over simulated parts.

Simulator only (never deployed to hardware):
- flash: the real SpiNor driver over sim.spi.SpiNorSim (W25Q16JV, 2 MiB), image file `flash.img`
- samples: sim.grid from `scenario.json` (keys as in host_tools/sim/grid.py), 4 kHz pairs, 12-bit
- keystore: files under `keys/`; on first start a random *development* key is provisioned and
  shown as such in status (real boards have no key until `meterctl provision`)
- power-fail input: the host's pipe (vboard/powerrail.py) when the host wires it, with a hold-up time
  of UMETER_HOLD_UP_MS (default 20) ms of simulated time; the flash refuses to work past it
- clean stops: a soft reset or machine.reset() (sys.atexit) and the host's stop byte book the open
  window and checkpoint first
All files live in the board directory: the working directory (the virtual board mounts it as `/`).
"""
import json
import os

NAME = "sim"
ARCH = None  # runs on the unix port
KEY_STORAGE = "host-file"  # keys/ in the board directory on the host
DEVELOPMENT_KEY = True
FLASH_CHIP = "W25Q16JV"
PARTITIONS = [("journal", 1536 * 1024), ("state", 64 * 1024), ("ota", None)]
CHECKPOINT_S = int(os.getenv("UMETER_CHECKPOINT_S") or "60")
ENGINE = {"v_peak_fs": 400.0, "i_peak_fs": 100.0, "u_nominal": 230.0, "i_nominal": 10.0, "profile_min": 15}
CALIBRATION = {}
POWER_FAIL_PIN = "vboard"  # the host's power-fail pipe (vboard/powerrail.py), when wired


def board_dir():
    return os.getenv("UMETER_BOARD_DIR") or "."


def flash_image():
    return os.getenv("UMETER_FLASH_IMAGE") or board_dir() + "/flash.img"


_rail = None


def rail():
    """The supply (vboard.powerrail.PowerRail), counted on the simulated flash's clock."""
    global _rail
    if _rail is None:
        from vboard.powerrail import PowerRail

        _rail = PowerRail(_flash_sim().ticks_us)
    return _rail


_sim = None


def _flash_sim():
    global _sim
    if _sim is None:
        from sim.spi import SpiNorSim

        _sim = SpiNorSim(FLASH_CHIP, path=flash_image())
    return _sim


def flash():
    from umeter.hal.spi_nor import SpiNor

    sim = _flash_sim()
    return Powered(SpiNor(sim.spi, sim.cs, sleep_us=sim.sleep_us, ticks_us=sim.ticks_us), rail())


class Powered:
    """The flash device behind the supply: no program or erase starts that would end past the hold-up."""

    def __init__(self, dev, supply):
        self._dev = dev
        self._supply = supply
        self.size, self.sector_size, self.page_size = dev.size, dev.sector_size, dev.page_size
        from sim.nor import TIMING_US, program_time_us  # the datasheet's typical busy times

        self._program_us = program_time_us
        self._erase_us = TIMING_US["sector_erase_typ"]

    def __getattr__(self, name):
        return getattr(self._dev, name)

    def read(self, addr, n):
        return self._dev.read(addr, n)

    def program(self, addr, data):
        self._supply.check(self._program_us(len(data)))
        self._dev.program(addr, data)

    def erase_sector(self, addr):
        self._supply.check(self._erase_us)
        self._dev.erase_sector(addr)


def scenario():
    """The grid scenario: from the virtual board's environment, else scenario.json, else defaults."""
    text = os.getenv("UMETER_SIM_SCENARIO_JSON")
    if text:
        return json.loads(text)
    try:
        with open(board_dir() + "/scenario.json") as f:
            return json.load(f)
    except OSError:
        return {}


def sampler():
    from sim.grid import Grid

    grid = Grid(scenario())
    speed = float(os.getenv("UMETER_SIM_SPEED") or "1")
    return Mains(grid if speed <= 0 else Paced(grid, speed), rail())


class Mains:
    """The sample source behind the supply: the host's power-fail edge runs the meter's handler (from
    the thread that steps the meter: the unix port runs scheduled callbacks only in the main thread,
    which sits in the REPL), and after it no samples come (the mains are gone)."""

    def __init__(self, src, supply):
        self._src = src
        self._supply = supply
        for name in ("rate_hz", "adc_bits", "skew_us", "block_pairs"):
            setattr(self, name, getattr(src, name))

    def start(self):
        self._src.start()

    def stop(self):
        self._src.stop()

    def read_block(self):
        supply = self._supply
        if supply.failed:
            return None
        kind = supply.edge()
        if kind is not None:
            from umeter import app

            supply.handle(kind, app.meter())
            return None
        return self._src.read_block()


class Paced:
    """A sample source that hands out blocks no faster than `speed` x real time (interactive use);
    the headless runner uses the grid directly (as fast as the host allows)."""

    def __init__(self, src, speed):
        import time

        self._src = src
        self._time = time
        self._t0 = time.ticks_ms()
        self._ms_per_block = 1000.0 * src.block_pairs / src.rate_hz / speed
        self._blocks = 0
        for name in ("rate_hz", "adc_bits", "skew_us", "block_pairs"):
            setattr(self, name, getattr(src, name))

    def start(self):
        self._src.start()

    def stop(self):
        self._src.stop()

    def read_block(self):
        due = self._time.ticks_diff(self._time.ticks_ms(), self._t0) >= self._blocks * self._ms_per_block
        if not due:
            return None
        self._blocks += 1
        return self._src.read_block()


def keys_dir():
    return os.getenv("UMETER_KEYS_DIR") or board_dir() + "/keys"


def keystore():
    from umeter.hal.keystore_file import open_keystore

    ks = open_keystore(keys_dir())
    if not ks.provisioned:
        ks.provision(os.urandom(32))  # development key: the virtual board runs out of the box
    return ks


def watchdog():
    return None


def power_fail(callback):
    """True when the host wired the power-fail pipe. The edge is handled by Mains (see there), not by
    the scheduled IRQ callback."""
    return rail().wired


def start_background(step):
    """Unix port: a thread steps the meter while the REPL thread serves mpremote. Once a second it
    also writes status.json into the board directory for the host's live display. A soft reset or
    machine.reset() ends the process: at exit the thread books the open window and checkpoints first
    (the REPL thread waits for it, at most 3 s)."""
    import _thread
    import sys
    import time

    from umeter import app

    flags = [False, False]  # exit requested, clean stop done

    def loop():
        last = time.ticks_ms()
        while not flags[0]:
            if not step():
                time.sleep_ms(2)
            if time.ticks_diff(time.ticks_ms(), last) >= 1000:
                last = time.ticks_ms()
                write_status()
        if not rail().failed:  # after a power-fail edge the handler already stopped the meter
            app.meter().stop()
        flags[1] = True

    def at_exit():
        flags[0] = True
        t0 = time.ticks_ms()
        while not flags[1] and time.ticks_diff(time.ticks_ms(), t0) < 3000:
            time.sleep_ms(5)

    sys.atexit(at_exit)
    _thread.start_new_thread(loop, ())


def write_status():
    from umeter import app

    path = board_dir() + "/status.json"
    try:
        with open(path + ".tmp", "w") as f:
            json.dump(app.status(), f)
        os.rename(path + ".tmp", path)
    except Exception as e:  # the display is a convenience: never let it stop the meter
        print("status.json:", e)
