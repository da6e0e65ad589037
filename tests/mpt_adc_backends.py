# RP2040 and ESP32 sampling backends on the unix port, with fake mem32 / DMA / ADC / Timer objects.
# What these prove: divider arithmetic, the register values written, DMA set-up, buffer bookkeeping,
# pacing set-up and no allocation per tick/IRQ/block. They cannot prove the real DMA or ADC behaviour.
import micropython
from mptest import raises
from umeter.hal import adc_esp32 as E
from umeter.hal import adc_rp2 as R

# ---------------------------------------------------------------------------------------------------
# fakes


class FakeMem:
    """machine.mem32 stand-in: remembers writes; CS always READY, FIFO empty unless told otherwise."""

    def __init__(self):
        self.regs = {}
        self.log = []
        self.fifo = 0
        self.over = False

    def __getitem__(self, addr):
        if addr == R.ADC_CS:
            return self.regs.get(addr, 0) | R.CS_READY
        if addr == R.ADC_FCS:
            v = self.regs.get(addr, 0) & 0xFF
            if not self.fifo:
                v |= R.FCS_EMPTY
            if self.over:
                v |= R.FCS_OVER
            return v
        if addr == R.ADC_FIFO:
            self.fifo -= 1
            return 0x123
        return self.regs.get(addr, 0)

    def __setitem__(self, addr, value):
        self.log.append((addr, value))
        if addr == R.ADC_FCS and value & R.FCS_OVER:
            self.over = False
        self.regs[addr] = value


class FakeDMA:
    next_channel = 3

    def __init__(self):
        self.channel = FakeDMA.next_channel
        FakeDMA.next_channel += 1
        self.handler = None
        self.hard = None
        self.cfg = None
        self.write = None
        self.is_active = False
        self.closed = False

    def pack_ctrl(self, **kw):
        return kw

    def config(self, read=None, write=None, count=None, ctrl=None, trigger=False):
        self.cfg = {"read": read, "write": write, "count": count, "ctrl": ctrl, "trigger": trigger}
        self.write = write
        if trigger:
            self.is_active = True

    def irq(self, handler=None, hard=False):
        self.handler = handler
        self.hard = hard

    def active(self, v=None):
        if v is None:
            return self.is_active
        self.is_active = bool(v)

    def close(self):
        self.closed = True


class FakeAdc:
    def __init__(self, pin):
        self.pin = pin


def rp2_source(v=26, i=27, rate=4000, pairs=16):
    mem = FakeMem()
    src = R.AdcRp2(v, i, rate_hz=rate, block_pairs=pairs, mem=mem, dma_factory=FakeDMA, adc_factory=FakeAdc)
    return src, mem


def dma_completes(ch, first):
    """What the hardware would do: fill the channel's buffer from its write pointer, leave the pointer
    past the end, raise the completion IRQ."""
    buf = ch.write
    for k in range(len(buf)):
        buf[k] = first + k
    ch.write = None                  # the real WRITE_ADDR now points past the buffer
    ch.handler(ch)


# ---------------------------------------------------------------------------------------------------
# RP2040


def test_rp2_divider_arithmetic():
    assert R.divider_for(4000) == (6000 - 1) << 8            # 48 MHz / 8000 conversions = 6000 cycles
    assert R.divider_for(250000) == 95 << 8                  # 96 cycles: the fastest the ADC runs
    for rate in (500, 1000, 2000, 3000, 3200, 4000, 4800, 5000, 6000, 8000, 10000, 12000, 16000, 250000):
        assert R.rate_for(R.divider_for(rate)) == rate, rate
    # 48e6 * 256 / (2 * 7) is not an integer: not exactly reachable
    for bad in (7, 250001, 0, -5, 300000):
        with raises(ValueError):
            R.divider_for(bad)
    with raises(ValueError, match="slower"):
        R.divider_for(250)                                   # period 96000 cycles > 16-bit INT
    fine = R.divider_for(3750)                               # 6400 cycles exactly
    assert fine & 0xFF == 0 and R.rate_for(fine) == 3750


def test_rp2_fractional_divider_used_when_needed():
    # 48e6 * 256 / (2 * 1024) = 6000000 / 1 -> 23437.5 cycles: FRAC = 128
    div = R.divider_for(1024)
    assert div == ((23437 - 1) << 8) | 128
    assert R.rate_for(div) == 1024


def test_rp2_interface_attributes_and_skew():
    src, _ = rp2_source(rate=4000, pairs=32)
    assert src.rate_hz == 4000 and isinstance(src.rate_hz, int)
    assert src.adc_bits == 12 and src.block_pairs == 32
    assert src.skew_us == 125.0                              # one conversion period
    assert [adc.pin for adc in src._adc_pins] == [26, 27]    # both pads set up as ADC inputs
    assert R.skew_us_for(250000) == 2.0


def test_rp2_register_values_on_start():
    src, mem = rp2_source(rate=4000)
    src.start()
    writes = dict(mem.log)
    assert writes[R.ADC_DIV] == 5999 << 8
    fcs = mem.regs[R.ADC_FCS]
    assert fcs & R.FCS_EN and fcs & R.FCS_DREQ_EN and not fcs & (R.FCS_SHIFT | R.FCS_ERR)
    assert (fcs >> R.FCS_THRESH_SHIFT) & 0xF == 1
    cs = mem.regs[R.ADC_CS]
    assert cs == 0x30009                                     # EN | START_MANY | AINSEL=0 | RROBIN=0b11
    assert mem.log[-1] == (R.ADC_CS, cs)                     # sampling starts last, after the DMA is armed
    assert R.cs_value(1, 0) == 0x31009                       # V on ADC1: starts on ADC1
    assert R.cs_value(0, 2, start=False) == 0x50001


def test_rp2_dma_setup_chained_double_buffer():
    src, mem = rp2_source(pairs=16)
    src.start()
    a, b = src._dma
    for ch, other, trig, buf in ((a, b, True, src._bufs[0]), (b, a, False, src._bufs[1])):
        assert ch.cfg["read"] == 0x4004C00C                  # ADC FIFO
        assert ch.cfg["write"] is buf and len(buf) == 32
        assert ch.cfg["count"] == 32
        assert ch.cfg["trigger"] is trig
        ctrl = ch.cfg["ctrl"]
        assert ctrl["size"] == 1 and ctrl["inc_read"] is False and ctrl["inc_write"] is True
        assert ctrl["treq_sel"] == 36 and ctrl["chain_to"] == other.channel and ctrl["irq_quiet"] is False
        assert ch.hard is True and ch.handler is not None
    assert src._bufs[0] is not src._bufs[1]


def test_rp2_buffer_bookkeeping():
    src, mem = rp2_source(pairs=8)
    src.start()
    a, b = src._dma
    assert src.read_block() is None
    dma_completes(a, 100)
    assert a.write is src._bufs[0]                           # re-armed by the IRQ
    blk = src.read_block()
    assert blk is src._bufs[0] and list(blk) == list(range(100, 116))
    assert src.read_block() is None
    dma_completes(b, 200)
    assert b.write is src._bufs[1]
    assert list(src.read_block()) == list(range(200, 216))
    # engine falls behind by two blocks: newest returned, loss counted
    dma_completes(a, 300)
    dma_completes(b, 400)
    dma_completes(a, 500)
    blk = src.read_block()
    assert blk is src._bufs[0] and blk[0] == 500
    assert src.overruns == 2


def test_rp2_no_allocation_in_irq_and_read_block():
    src, mem = rp2_source(pairs=8)
    src.start()
    a, b = src._dma
    ha, hb = a.handler, b.handler
    a.write = None
    micropython.heap_lock()
    try:
        ha(a)
        x = src.read_block()
        hb(b)
        y = src.read_block()
        z = src.read_block()
    finally:
        micropython.heap_unlock()
    assert x is src._bufs[0] and y is src._bufs[1] and z is None


def test_rp2_block_counter_wraps_without_allocating():
    src, mem = rp2_source(pairs=8)
    src.start()
    a, b = src._dma
    src._done = src._taken = R.COUNT_MASK - 1                # 2**29 - 2 blocks: the next is an A block
    dma_completes(a, 10)
    micropython.heap_lock()
    try:
        x = src.read_block()
        b.handler(b)                                         # wraps to 0
        y = src.read_block()
    finally:
        micropython.heap_unlock()
    assert src._done == 0
    assert x is src._bufs[0] and x[0] == 10 and y is src._bufs[1] and src.overruns == 0


def test_rp2_fifo_overflow_restarts():
    src, mem = rp2_source()
    src.start()
    mem.over = True
    n = len(mem.log)
    assert src.read_block() is None
    assert src.restarts == 1 and src.running
    assert (R.ADC_CS, 0x30009) in mem.log[n:]                # sampling restarted
    assert not mem.over                                       # flag cleared (write 1 to clear)


def test_rp2_stop_and_close():
    src, mem = rp2_source()
    src.start()
    mem.fifo = 3
    src.stop()
    assert not mem.regs[R.ADC_CS] & R.CS_START_MANY
    assert mem.regs[R.ADC_FCS] == 0 and mem.fifo == 0         # FIFO drained
    assert not any(ch.is_active for ch in src._dma)
    src.close()
    assert all(ch.closed and ch.handler is None for ch in src._dma)


def test_rp2_pins():
    class PinLike:
        def __init__(self, n):
            self.n = n

        def __str__(self):
            return "Pin(GPIO%d, mode=ALT, alt=31)" % self.n

    assert R.adc_channel(PinLike(28)) == 2 and R.adc_channel(26) == 0
    src, _ = rp2_source(v=28, i=29)
    assert (src.v_ch, src.i_ch) == (2, 3)
    for bad in ((25, 26), (26, 26), (26, 30)):
        with raises(ValueError):
            R.AdcRp2(bad[0], bad[1], mem=FakeMem(), dma_factory=FakeDMA, adc_factory=FakeAdc)


# ---------------------------------------------------------------------------------------------------
# ESP32


class FakeTimer:
    PERIODIC = 1

    def __init__(self):
        self.kw = None
        self.deinits = 0

    def init(self, **kw):
        self.kw = kw

    def deinit(self):
        self.deinits += 1


class RampAdc:
    """read_u16 returns a 12-bit ramp spread over 16 bits, like the ESP32 port's read_u16."""

    def __init__(self, pin, start):
        self.pin = pin
        self.k = start

    def read_u16(self):
        v = (self.k & 0xFFF) << 4
        self.k += 1
        return v


def esp_source(pairs=8, rate=2000, hard=False):
    adcs = []

    def factory(pin):
        adc = RampAdc(pin, 0 if not adcs else 2000)
        adcs.append(adc)
        return adc

    tim = FakeTimer()
    src = E.AdcEsp32(34, 35, rate_hz=rate, block_pairs=pairs, hard=hard, adc_factory=factory, timer=tim)
    return src, tim, adcs


def test_esp32_interface_and_timer_setup():
    src, tim, adcs = esp_source(rate=2000, hard=True)
    assert (adcs[0].pin, adcs[1].pin) == (34, 35)
    assert src.rate_hz == 2000 and src.adc_bits == 12 and src.block_pairs == 8
    assert src.skew_us == E.DEFAULT_SKEW_US
    src.start()
    assert tim.kw["mode"] == FakeTimer.PERIODIC and tim.kw["freq"] == 2000 and tim.kw["hard"] is True
    assert tim.kw["callback"] is src._cb
    src.stop()
    assert tim.deinits == 1 and not src.running


def test_esp32_only_adc1_pins():
    for bad in ((25, 35), (34, 4)):                          # GPIO25 and GPIO4 are ADC2
        with raises(ValueError, match="ADC1"):
            E.AdcEsp32(bad[0], bad[1], adc_factory=FakeAdc, timer=FakeTimer())


def test_esp32_ticks_fill_interleaved_double_buffers():
    src, tim, _ = esp_source(pairs=8)
    src.start()
    tick = tim.kw["callback"]
    assert src.read_block() is None
    for _ in range(7):
        tick(tim)
    assert src.read_block() is None
    tick(tim)
    blk = src.read_block()
    assert blk is src._bufs[0]
    assert list(blk) == [0, 2000, 1, 2001, 2, 2002, 3, 2003, 4, 2004, 5, 2005, 6, 2006, 7, 2007]
    assert src.read_block() is None
    for _ in range(8):
        tick(tim)
    blk = src.read_block()
    assert blk is src._bufs[1] and blk[0] == 8 and blk[1] == 2008
    for _ in range(24):                                       # three blocks unread
        tick(tim)
    blk = src.read_block()
    assert blk is src._bufs[0] and blk[0] == 32 and src.overruns == 2


def test_esp32_no_allocation_per_tick_or_block():
    src, tim, _ = esp_source(pairs=16)
    src.start()
    tick = tim.kw["callback"]
    got = 0
    micropython.heap_lock()
    try:
        for _ in range(100):
            tick(tim)
            if src.read_block() is not None:
                got += 1
    finally:
        micropython.heap_unlock()
    assert got == 6


def test_esp32_block_counter_wraps():
    src, tim, _ = esp_source(pairs=8)
    src.start()
    src._done = src._taken = E.COUNT_MASK
    src._fill = src._bufs[1]                                 # block 2**29 - 1 was an A block; B is filling
    tick = tim.kw["callback"]
    micropython.heap_lock()
    try:
        for _ in range(8):
            tick(tim)
        blk = src.read_block()
    finally:
        micropython.heap_unlock()
    assert src._done == 0 and blk is src._bufs[1] and src.overruns == 0


def test_esp32_measure_skew_with_fake_clock():
    times = [1000, 1000 + 64 * 12]

    def ticks():
        return times.pop(0)

    src = E.AdcEsp32(adc_factory=lambda p: RampAdc(p, 0), timer=FakeTimer(), ticks_us=ticks)
    assert src.measure_skew(64) == 12.0 and src.skew_us == 12.0
