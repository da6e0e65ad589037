"""Board `esp32_atm90e32`: ESP32 with an ATM90E32 metering IC (as on common ESP32 energy-meter boards)
and a W25Q SPI NOR on a second bus (the IC needs SPI mode 3, the flash mode 0).

Wiring: ATM90E32 on VSPI (SPI id 2): SCK GPIO18, MOSI GPIO23, MISO GPIO19, CS GPIO5.
W25Q on HSPI (SPI id 1): SCK GPIO14, MOSI GPIO13, MISO GPIO27, CS GPIO26 (GPIO12/15 are boot
strapping pins, so they are avoided). Keys in esp32.NVS.
GPIO32: power-fail input (POWER_FAIL_PIN, internal pull-up, falling edge): a supply supervisor's power-fail
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

NAME = "esp32_atm90e32"
ARCH = "xtensawin"
KEY_STORAGE = "internal"  # NVS: protected against chip readout only with flash + NVS encryption enabled
PARTITIONS = [("journal", 1536 * 1024), ("state", 64 * 1024), ("ota", None)]
CHECKPOINT_S = 60
ENGINE = {"profile_min": 15, "demand_s": 60}  # load profile (the chip does the metering)
CALIBRATION = {}           # ATM90E32 gains/offsets: Atm90e32.set_calibration (see its docstring)
POWER_FAIL_PIN = 32        # power-fail input, falling edge = supply failing (see the wiring above)
WDT_TIMEOUT_MS = 8000
LINE_HZ = 50
METER_CONSTANT = 3200      # MC, imp/kWh, sets the chip's energy scaling


def flash():
    from umeter.hal.spi_nor import SpiNor

    spi = SPI(1, baudrate=20000000, polarity=0, phase=0, sck=Pin(14), mosi=Pin(13), miso=Pin(27))
    return SpiNor(spi, Pin(26, Pin.OUT, value=1))


_chip = None


def metering_ic():
    global _chip
    if _chip is None:
        from umeter.hal.atm90e32 import Atm90e32

        spi = SPI(2, baudrate=1000000, polarity=1, phase=1, sck=Pin(18), mosi=Pin(23), miso=Pin(19))
        _chip = Atm90e32(spi, Pin(5, Pin.OUT, value=1), phases=(0,), line_hz=LINE_HZ, mc=METER_CONSTANT)
        _chip.configure()
    return _chip


def sampler():
    from umeter.metering.ic_engine import IcTicker

    return IcTicker()


def engine(src):
    from umeter.metering.ic_engine import IcEngine

    return IcEngine(metering_ic(), phase=0, **ENGINE)


def keystore():
    from umeter.hal.keystore_esp32 import open_keystore

    return open_keystore()


def watchdog():
    return WDT(timeout=WDT_TIMEOUT_MS)


def power_fail(callback):
    return mcu.power_fail_input(POWER_FAIL_PIN, callback)


def start_background(step):
    """A soft timer steps the meter while the REPL waits, so mpremote can talk to a running meter."""
    mcu.step_in_background(step, timer_id=0, period_ms=100, burst=4)
