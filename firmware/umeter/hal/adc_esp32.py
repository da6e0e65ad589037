"""ESP32 sample source: a hardware timer paces one V,I pair per tick on two ADC1 inputs (GPIO34 = V,
GPIO35 = I by default; ADC2 cannot be used while Wi-Fi is on) into two preallocated buffers.

Rate and skew (ESTIMATES, not measured on a device yet): an ADC1 one-shot read through MicroPython
costs roughly 10-20 us on a 240 MHz ESP32 and entering the timer callback another 15-30 us, so a pair
costs about 40-70 us of CPU. The default 2000 pairs/s therefore uses roughly 10-15 % of one core; about
8 kHz is the practical ceiling before the rest of the firmware starves. The I read follows the V read by
one ADC read, so `skew_us` defaults to an estimated 15 us; call `measure_skew()` on the device to replace
the estimate with the timed cost of a read (it uses time.ticks_us over `n` reads).

Timing quality: the timer keeps the *average* rate exact, but a soft (scheduled) callback starts late
whenever the interpreter is busy (GC, flash writes), which is sampling jitter and costs accuracy. Pass
`hard=True` to run the tick in the timer interrupt instead: tighter timing, but only where the port's
ADC read is ISR-safe - check on the target before relying on it. For certified accuracy on ESP32 use the
ATM90E32 (umeter.hal.atm90e32) instead.

Tested on the unix port with fake ADC and Timer objects (tests/mpt_adc_backends.py): buffer bookkeeping,
the pacing set-up and no allocation per tick. Not yet run on an ESP32.
"""
import time

import machine
import micropython

from umeter.hal.blocks import COUNT_MASK, DoubleBuffered

V_GPIO = 34
I_GPIO = 35
ADC1_GPIOS = (32, 33, 34, 35, 36, 37, 38, 39)
DEFAULT_SKEW_US = 15


class AdcEsp32(DoubleBuffered):
    """Sample source (see notes/sampling.md). v_pin, i_pin: ADC1 GPIO numbers or machine.Pin objects
    (GPIO32..39). `adc_factory`, `timer`, `ticks_us` are for tests: default machine.ADC with 11 dB
    attenuation, machine.Timer(timer_id), time.ticks_us."""

    adc_bits = 12

    def __init__(self, v_pin=V_GPIO, i_pin=I_GPIO, rate_hz=2000, block_pairs=256, timer_id=0, hard=False,
                 skew_us=DEFAULT_SKEW_US, adc_factory=None, timer=None, ticks_us=None):
        for p in (v_pin, i_pin):
            if isinstance(p, int) and p not in ADC1_GPIOS:
                raise ValueError("GPIO %d is not an ADC1 input (ADC2 clashes with Wi-Fi)" % p)
        if not 1 <= rate_hz <= 20000:
            raise ValueError("rate_hz out of range")
        if not 8 <= block_pairs <= 16384:
            raise ValueError("block_pairs out of range")
        self.rate_hz = int(rate_hz)
        self.block_pairs = block_pairs
        self.skew_us = skew_us
        self.hard = hard
        if adc_factory is None:
            adc_factory = _default_adc
        self._adc_v = adc_factory(v_pin)
        self._adc_i = adc_factory(i_pin)
        self._rv = self._adc_v.read_u16          # bound once: a bound method made per tick would allocate
        self._ri = self._adc_i.read_u16
        self._timer = timer if timer is not None else machine.Timer(timer_id)
        self._ticks_us = ticks_us or time.ticks_us
        self._init_blocks(block_pairs)
        self._n = 2 * block_pairs
        self._fill = self._bufs[0]
        self._idx = 0
        self.running = False
        self._cb = self._tick

    @micropython.native
    def _tick(self, _t):
        # One pair: V then I, scaled to 12 bits (read_u16 spreads 12 bits over 16).
        buf = self._fill
        i = self._idx
        buf[i] = self._rv() >> 4
        buf[i + 1] = self._ri() >> 4
        i += 2
        if i >= self._n:
            self._done = (self._done + 1) & COUNT_MASK
            self._fill = self._bufs[self._done & 1]
            i = 0
        self._idx = i

    def start(self):
        if self.running:
            return
        self._fill = self._bufs[0]
        self._idx = 0
        self._done = 0
        self._taken = 0
        self._timer.init(mode=self._timer.PERIODIC, freq=self.rate_hz, callback=self._cb, hard=self.hard)
        self.running = True

    def stop(self):
        self._timer.deinit()
        self.running = False

    def read_block(self):
        """The newest completed block (array('H'), V,I,V,I... 12-bit) or None. Valid until the timer has
        filled the other buffer, i.e. for one block period."""
        return self._newest(self._done)

    def measure_skew(self, n=64):
        """Time `n` V reads with ticks_us and set skew_us to the cost of one read (the V-to-I delay).
        Call while stopped."""
        t = self._ticks_us
        rv = self._rv
        t0 = t()
        for _ in range(n):
            rv()
        self.skew_us = time.ticks_diff(t(), t0) / n
        return self.skew_us


def _default_adc(pin):
    if isinstance(pin, int):
        pin = machine.Pin(pin)
    return machine.ADC(pin, atten=machine.ADC.ATTN_11DB)
