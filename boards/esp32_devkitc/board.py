"""Board `esp32_devkitc`: ESP32-WROOM-32 DevKitC with a W25Q SPI NOR and two ADC1 inputs.

Wiring: W25Q on VSPI (SPI id 2): SCK GPIO18, MOSI GPIO23, MISO GPIO19, CS GPIO5.
V on GPIO34 (ADC1_CH6), I on GPIO35 (ADC1_CH7) (ADC2 clashes with Wi-Fi). Keys in esp32.NVS.
GPIO27: power-fail input (POWER_FAIL_PIN, internal pull-up, falling edge): a supply supervisor's power-fail
output (PFO; open-drain, or push-pull at 3.3 V), its PFI on a divider from the unregulated rail
(e.g. 5 V USB or the DC input, ahead of the 3.3 V regulator) set to trip while that rail can still
hold the regulator up for 20 ms; or, without a supervisor, a divider from the unregulated rail
straight to the pin (the ESP32 reads low below about 0.8 V: no hysteresis, so leave a margin). Hold-up:
C >= I x 20 ms / (V_trip - V_dropout), e.g. 150 mA, 5 V tripping at 4.6 V, regulator out at 4.4 V:
15 mF; with a 12 V input and a buck regulator, far less. The meter then books the open window
and checkpoints (about 1 ms of flash time on the virtual board). Nothing on the pin: the pull-up
keeps it high and the meter runs without the warning.
"""
from machine import SPI, WDT, Pin

from umeter.hal import mcu

NAME = "esp32_devkitc"
ARCH = "xtensawin"
KEY_STORAGE = "internal"  # NVS: protected against chip readout only with flash + NVS encryption enabled
PARTITIONS = [("journal", 1536 * 1024), ("state", 64 * 1024), ("ota", None)]
CHECKPOINT_S = 60
SAMPLE_RATE_HZ = 2000
ENGINE = {"v_peak_fs": 400.0, "i_peak_fs": 100.0, "u_nominal": 230.0, "i_nominal": 10.0, "profile_min": 15}
CALIBRATION = {}           # per-unit figures come from the lab (meterctl provision --calibration)
POWER_FAIL_PIN = 27        # power-fail input, falling edge = supply failing (see the wiring above)
WDT_TIMEOUT_MS = 8000


def flash():
    from umeter.hal.spi_nor import SpiNor

    spi = SPI(2, baudrate=20000000, polarity=0, phase=0, sck=Pin(18), mosi=Pin(23), miso=Pin(19))
    return SpiNor(spi, Pin(5, Pin.OUT, value=1))


def sampler():
    from umeter.hal.adc_esp32 import AdcEsp32

    return AdcEsp32(v_pin=34, i_pin=35, rate_hz=SAMPLE_RATE_HZ, block_pairs=200)


def keystore():
    from umeter.hal.keystore_esp32 import open_keystore

    return open_keystore()


def watchdog():
    return WDT(timeout=WDT_TIMEOUT_MS)


def power_fail(callback):
    return mcu.power_fail_input(POWER_FAIL_PIN, callback)


def start_background(step):
    """A soft timer steps the meter while the REPL waits, so mpremote can talk to a running meter."""
    mcu.step_in_background(step, timer_id=0, period_ms=20, burst=8)
