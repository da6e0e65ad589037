"""Double-buffered sample blocks, shared by the MCU ADC backends (adc_esp32, adc_rp2): two preallocated
V,I buffers, a block counter the interrupt/timer side bumps, and the reader's bookkeeping."""
import array

from micropython import const

COUNT_MASK = const(0x1FFFFFFF)  # the counter stays a small int (+1 too): interrupts must not allocate


class DoubleBuffered:
    def _init_blocks(self, block_pairs):
        self._bufs = (array.array("H", bytes(4 * block_pairs)), array.array("H", bytes(4 * block_pairs)))
        self._done = 0   # blocks completed (written by the interrupt side, wraps at COUNT_MASK)
        self._taken = 0  # blocks handed to the reader
        self.overruns = 0

    def _newest(self, done):
        """The newest completed block, or None; blocks the reader never saw count as overruns."""
        fresh = (done - self._taken) & COUNT_MASK
        if fresh <= 0:
            return None
        if fresh > 1:
            self.overruns += fresh - 1
        self._taken = done
        return self._bufs[(done - 1) & 1]
