"""RP2040 sample source: ADC round-robin over V and I, paced by the ADC clock divider, into two
preallocated buffers through two chained rp2.DMA channels reading the ADC FIFO (DREQ_ADC = 36).

TESTED ONLY AGAINST FAKES. The register values, divider arithmetic, DMA set-up and buffer bookkeeping are
tested on the unix port with a fake `mem32` and fake DMA channels (tests/mpt_adc_backends.py); the real
ADC/DMA path has not run on an RP2040 in this project yet.

How it works (RP2040 datasheet, ADC section): the ADC runs from the 48 MHz ADC clock, a conversion takes
96 cycles (500 kS/s at most). With DIV = INT.FRAC (16.8 fixed point) and START_MANY it starts a conversion
every 1 + INT + FRAC/256 cycles. RROBIN enables the V and I channels and AINSEL starts on V, so the FIFO
receives V0, I0, V1, I1, ... which is exactly the interleaving the engine wants. The I sample of a pair is
taken one conversion period after its V sample: that is `skew_us` = 1e6 / (2 * rate_hz), e.g. 125 us at
4 kHz pairs (2.25 degrees at 50 Hz), which the engine compensates.

DMA channel A fills buffer 0 and chains to B, which fills buffer 1 and chains back to A, so sampling is
gap-free. Each channel's completion interrupt (hard IRQ) re-points its write address at its own buffer
and counts the block; read_block() hands out the newest completed buffer, no allocation. A returned
block stays valid for one block period (until the DMA comes back to that buffer); the engine processes
it at once. If the engine misses blocks, `overruns` counts them; an ADC FIFO overflow (DMA starved, pairs
could slip) restarts sampling and counts `restarts`. Either means a gap the engine must know about.
"""

import machine
from micropython import const

from umeter.hal.blocks import COUNT_MASK, DoubleBuffered

ADC_BASE = const(0x4004C000)
ADC_CS = ADC_BASE + 0x00
ADC_RESULT = ADC_BASE + 0x04
ADC_FCS = ADC_BASE + 0x08
ADC_FIFO = ADC_BASE + 0x0C
ADC_DIV = ADC_BASE + 0x10
ADC_INTR = ADC_BASE + 0x14

CS_EN = const(1 << 0)
CS_START_MANY = const(1 << 3)
CS_READY = const(1 << 8)
CS_ERR_STICKY = const(1 << 10)
CS_AINSEL_SHIFT = const(12)
CS_RROBIN_SHIFT = const(16)

FCS_EN = const(1 << 0)
FCS_SHIFT = const(1 << 1)
FCS_ERR = const(1 << 2)
FCS_DREQ_EN = const(1 << 3)
FCS_EMPTY = const(1 << 8)
FCS_UNDER = const(1 << 10)
FCS_OVER = const(1 << 11)
FCS_THRESH_SHIFT = const(24)

DREQ_ADC = const(36)
ADC_CLOCK_HZ = 48_000_000
CYCLES_PER_CONVERSION = 96
FIRST_ADC_GPIO = 26


def divider_for(rate_hz):
    """DIV register value (INT << 8 | FRAC) for `rate_hz` V,I pairs per second: two conversions per pair.
    ValueError unless the rate is exactly reachable and within the ADC's range."""
    rate_hz = int(rate_hz)
    if rate_hz <= 0:
        raise ValueError("rate must be positive")
    num = ADC_CLOCK_HZ * 256
    den = 2 * rate_hz
    if num % den:
        raise ValueError("%d Hz is not exactly reachable with a 1/256 divider" % rate_hz)
    period_256 = num // den               # cycles per conversion, in 1/256
    if period_256 < CYCLES_PER_CONVERSION * 256:
        raise ValueError("%d Hz pairs is faster than the ADC (250 kHz pairs max)" % rate_hz)
    div = period_256 - 256
    if div > 0xFFFFFF:
        raise ValueError("%d Hz pairs is slower than the divider allows" % rate_hz)
    return div


def rate_for(div):
    """Pairs per second (float) that a DIV register value gives: inverse of divider_for."""
    return ADC_CLOCK_HZ * 256 / (div + 256) / 2


def skew_us_for(rate_hz):
    """The I sample lags its V sample by one conversion period."""
    return 1_000_000 / (2 * rate_hz)


def cs_value(v_ch, i_ch, start=True):
    """ADC CS register: enabled, round-robin over the two channels, starting on V."""
    return CS_EN | (v_ch << CS_AINSEL_SHIFT) | (((1 << v_ch) | (1 << i_ch)) << CS_RROBIN_SHIFT) \
        | (CS_START_MANY if start else 0)


FCS_VALUE = FCS_EN | FCS_DREQ_EN | (1 << FCS_THRESH_SHIFT)   # FIFO on, DREQ at 1 sample, 12-bit, no ERR bit


def _gpio_number(pin):
    if isinstance(pin, int):
        return pin
    s = str(pin)                          # rp2 Pin repr: "Pin(GPIO26, mode=..."
    i = s.find("GPIO")
    if i < 0:
        raise ValueError("cannot tell the GPIO of %r" % (pin,))
    j = i + 4
    while j < len(s) and s[j].isdigit():
        j += 1
    return int(s[i + 4:j])


def _default_adc(pin):
    if isinstance(pin, int):
        pin = machine.Pin(pin)
    return machine.ADC(pin)


def adc_channel(pin):
    """ADC input of a GPIO (26..29 -> 0..3)."""
    ch = _gpio_number(pin) - FIRST_ADC_GPIO
    if not 0 <= ch <= 3:
        raise ValueError("GPIO %d has no ADC input (GPIO26..29)" % (ch + FIRST_ADC_GPIO))
    return ch


class AdcRp2(DoubleBuffered):
    """Sample source (see notes/sampling.md). v_pin, i_pin: GPIO numbers or Pins (GP26 = ADC0 ...).
    `mem`, `dma_factory`, `adc_factory` are for tests: default machine.mem32, rp2.DMA, machine.ADC."""

    adc_bits = 12

    def __init__(self, v_pin, i_pin, rate_hz=4000, block_pairs=256, mem=None, dma_factory=None,
                 adc_factory=None):
        self.v_ch = adc_channel(v_pin)
        self.i_ch = adc_channel(i_pin)
        if self.v_ch == self.i_ch:
            raise ValueError("V and I need two different ADC inputs")
        if not 8 <= block_pairs <= 16384:
            raise ValueError("block_pairs out of range")
        self.div = divider_for(rate_hz)
        self.rate_hz = int(rate_hz)
        self.skew_us = skew_us_for(self.rate_hz)
        self.block_pairs = block_pairs
        self._mem = mem if mem is not None else machine.mem32
        adc_factory = adc_factory or _default_adc
        self._adc_pins = (adc_factory(v_pin), adc_factory(i_pin))    # makes the pads analog, powers the ADC
        if dma_factory is None:
            import rp2
            dma_factory = rp2.DMA
        self._init_blocks(block_pairs)
        self._count = 2 * block_pairs
        self._dma = (dma_factory(), dma_factory())
        self.restarts = 0
        self.running = False
        self._irq_a = self._on_a
        self._irq_b = self._on_b

    # ---- DMA completion (hard IRQ: no allocation, no float) ----------------------------------------
    def _on_a(self, ch):
        self._dma[0].write = self._bufs[0]
        self._done = (self._done + 1) & COUNT_MASK

    def _on_b(self, ch):
        self._dma[1].write = self._bufs[1]
        self._done = (self._done + 1) & COUNT_MASK

    def _ctrl(self, ch, other):
        return ch.pack_ctrl(size=1, inc_read=False, inc_write=True, treq_sel=DREQ_ADC,
                            chain_to=other.channel, irq_quiet=False)

    # ---- sample-source interface -----------------------------------------------------------------
    def start(self):
        if self.running:
            return
        mem = self._mem
        mem[ADC_CS] = CS_EN                                  # stop free-running, keep powered
        self._drain()
        mem[ADC_FCS] = FCS_VALUE | FCS_OVER | FCS_UNDER      # clear sticky flags (write 1 to clear)
        mem[ADC_DIV] = self.div
        a, b = self._dma
        a.irq(self._irq_a, hard=True)
        b.irq(self._irq_b, hard=True)
        b.config(read=ADC_FIFO, write=self._bufs[1], count=self._count, ctrl=self._ctrl(b, a), trigger=False)
        a.config(read=ADC_FIFO, write=self._bufs[0], count=self._count, ctrl=self._ctrl(a, b), trigger=True)
        self._done = 0
        self._taken = 0
        mem[ADC_CS] = cs_value(self.v_ch, self.i_ch)         # V first, then I, V, I ...
        self.running = True

    def stop(self):
        mem = self._mem
        mem[ADC_CS] = CS_EN
        for _ in range(1000):
            if mem[ADC_CS] & CS_READY:
                break
        for ch in self._dma:
            ch.active(0)
        mem[ADC_FCS] = 0
        self._drain()
        self.running = False

    def close(self):
        self.stop()
        for ch in self._dma:
            ch.irq(None)
            ch.close()

    def _drain(self):
        mem = self._mem
        for _ in range(8):                                   # the FIFO is 4 deep
            if mem[ADC_FCS] & FCS_EMPTY:
                break
            mem[ADC_FIFO]

    def read_block(self):
        """The newest completed block (array('H'), 2 * block_pairs samples V,I,V,I...) or None."""
        if self._mem[ADC_FCS] & FCS_OVER:
            self.stop()
            self.restarts += 1
            self.start()
            return None
        return self._newest(self._done)                      # one read: the IRQ may bump it any time
