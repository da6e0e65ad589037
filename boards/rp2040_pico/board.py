"""Board `rp2040_pico`: Raspberry Pi Pico with a W25Q SPI NOR and the on-chip ADC.

Wiring: W25Q on SPI0: SCK GP2, MOSI GP3, MISO GP4, CS GP5. V on ADC0 (GP26), I on ADC1 (GP27),
sampled round-robin into DMA buffers. Keys in a file on the internal littlefs.
"""
from machine import SPI, WDT, Pin

from umeter.hal import mcu

NAME = "rp2040_pico"
ARCH = "armv6m"
PARTITIONS = [("journal", 1536 * 1024), ("state", 64 * 1024), ("ota", None)]
CHECKPOINT_S = 60
SAMPLE_RATE_HZ = 4000
ENGINE = {"v_peak_fs": 400.0, "i_peak_fs": 100.0, "u_nominal": 230.0, "i_nominal": 10.0, "profile_min": 15}
CALIBRATION = {}
POWER_FAIL_PIN = None      # e.g. 22: a supervisor's PFO output, falling edge = supply failing
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
