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
CHECKPOINT_S = 60
ENGINE = {"v_peak_fs": 400.0, "i_peak_fs": 100.0, "u_nominal": 230.0, "i_nominal": 10.0, "profile_min": 15}
CALIBRATION = {}
POWER_FAIL_PIN = None


def board_dir():
    return os.getenv("UMETER_BOARD_DIR") or "."


def flash():
    from sim.spi import SpiNorSim
    from umeter.hal.spi_nor import SpiNor

    sim = SpiNorSim(FLASH_CHIP, path=board_dir() + "/flash.img")
    return SpiNor(sim.spi, sim.cs, sleep_us=sim.sleep_us, ticks_us=sim.ticks_us)


def scenario():
    try:
        with open(board_dir() + "/scenario.json") as f:
            return json.load(f)
    except OSError:
        return {}


def sampler():
    from sim.grid import Grid

    return Grid(scenario())


def keystore():
    from umeter.hal.keystore_file import open_keystore

    ks = open_keystore(board_dir() + "/keys")
    if not ks.provisioned:
        ks.provision(os.urandom(32))  # development key: the virtual board runs out of the box
    return ks


def watchdog():
    return None


def power_fail(callback):
    return False


def start_background(step):
    """Unix port: a thread steps the meter while the REPL thread serves mpremote."""
    import _thread
    import time

    def loop():
        while True:
            if not step():
                time.sleep_ms(1)

    _thread.start_new_thread(loop, ())
