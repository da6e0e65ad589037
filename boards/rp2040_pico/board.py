"""Board `rp2040_pico`: Raspberry Pi Pico with a W25Q SPI NOR and the on-chip ADC.

Wiring: W25Q on SPI0: SCK GP2, MOSI GP3, MISO GP4, CS GP5. V on ADC0 (GP26), I on ADC1 (GP27),
sampled round-robin into DMA buffers. Keys in a file on the internal littlefs.
GP22: power-fail input (POWER_FAIL_PIN, internal pull-up, falling edge): a supply supervisor's power-fail
output (PFO; open-drain, or push-pull at 3.3 V), its PFI on a divider from the unregulated rail
(VSYS, pin 39, ahead of the Pico's 3.3 V regulator) set to trip while that rail can still
hold the regulator up for 20 ms; or, without a supervisor, a divider from the unregulated rail
straight to the pin (the RP2040 reads low below about 0.8 V: no hysteresis, so leave a margin). Hold-up:
C >= I x 20 ms / (V_trip - V_dropout), e.g. 150 mA, 5 V tripping at 4.6 V, regulator out at 4.4 V:
15 mF; with a 12 V input and a buck regulator, far less. The meter then books the open window
and checkpoints (about 1 ms of flash time on the virtual board). Nothing on the pin: the pull-up
keeps it high and the meter runs without the warning.
"""
from machine import SPI, WDT, Pin

from umeter.hal import mcu

NAME = "rp2040_pico"
ARCH = "armv6m"
KEY_STORAGE = "external-unprotected"  # keystore files sit on the QSPI flash chip: a clip reads them
PARTITIONS = [("journal", 1536 * 1024), ("state", 64 * 1024), ("ota", None)]
CHECKPOINT_S = 60
SAMPLE_RATE_HZ = 4000
ENGINE = {"v_peak_fs": 400.0, "i_peak_fs": 100.0, "u_nominal": 230.0, "i_nominal": 10.0, "profile_min": 15}
CALIBRATION = {}
POWER_FAIL_PIN = 22        # power-fail input, falling edge = supply failing (see the wiring above)
WDT_TIMEOUT_MS = 8000      # RP2040 maximum is 8388 ms


def flash():
    from umeter.hal.spi_nor import SpiNor

    spi = SPI(0, baudrate=20000000, polarity=0, phase=0, sck=Pin(2), mosi=Pin(3), miso=Pin(4))
    return SpiNor(spi, Pin(5, Pin.OUT, value=1))


def sampler():
    from umeter.hal.adc_rp2 import AdcRp2

    return AdcRp2(26, 27, rate_hz=SAMPLE_RATE_HZ, block_pairs=200)


def keystore():
    from umeter.hal.keystore_rp2 import open_keystore

    return open_keystore()


def watchdog():
    return WDT(timeout=WDT_TIMEOUT_MS)


def power_fail(callback):
    return mcu.power_fail_input(POWER_FAIL_PIN, callback)


def start_background(step):
    """A soft timer steps the meter while the REPL waits, so mpremote can talk to a running meter."""
    mcu.step_in_background(step, timer_id=-1, period_ms=20, burst=8)
