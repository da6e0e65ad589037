"""Board `sim`: the virtual board. The real firmware on the MicroPython unix port over simulated parts.

Simulator only (never deployed to hardware):
- flash: the real SpiNor driver over sim.spi.SpiNorSim (W25Q16JV, 2 MiB), image file `flash.img`
- samples: sim.grid from `scenario.json` (keys as in host_tools/sim/grid.py), 4 kHz pairs, 12-bit
- keystore: files under `keys/`; on first start a random *development* key is provisioned and
  shown as such in status (real boards have no key until `meterctl provision`)
All files live in the board directory: the working directory (the virtual board mounts it as `/`).
"""
import json
import os

NAME = "sim"
ARCH = None  # runs on the unix port
DEVELOPMENT_KEY = True
FLASH_CHIP = "W25Q16JV"
PARTITIONS = [("journal", 1536 * 1024), ("state", 64 * 1024), ("ota", None)]
CHECKPOINT_S = int(os.getenv("UMETER_CHECKPOINT_S") or "60")
ENGINE = {"v_peak_fs": 400.0, "i_peak_fs": 100.0, "u_nominal": 230.0, "i_nominal": 10.0, "profile_min": 15}
CALIBRATION = {}
POWER_FAIL_PIN = None


def board_dir():
    return os.getenv("UMETER_BOARD_DIR") or "."


def flash_image():
    return os.getenv("UMETER_FLASH_IMAGE") or board_dir() + "/flash.img"


def flash():
    from sim.spi import SpiNorSim
    from umeter.hal.spi_nor import SpiNor

    sim = SpiNorSim(FLASH_CHIP, path=flash_image())
    return SpiNor(sim.spi, sim.cs, sleep_us=sim.sleep_us, ticks_us=sim.ticks_us)


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
    return grid if speed <= 0 else Paced(grid, speed)


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
    return False


def start_background(step):
    """Unix port: a thread steps the meter while the REPL thread serves mpremote. Once a second it
    also writes status.json into the board directory for the host's live display."""
    import _thread
    import time

    def loop():
        last = time.ticks_ms()
        while True:
            if not step():
                time.sleep_ms(2)
            if time.ticks_diff(time.ticks_ms(), last) >= 1000:
                last = time.ticks_ms()
                write_status()

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
