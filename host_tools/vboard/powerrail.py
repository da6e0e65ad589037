"""The virtual board's supply as the firmware sees it (MicroPython unix port; host side: meterctl/vboard.py
and the headless runner's tests).

- Power-fail input: the host writes one byte to a pipe (fd UMETER_VB_PF_FD): b"P" = the supply is
  failing (a supervisor's PFO, or the divider on the unregulated rail, went low), b"S" = a clean stop
  (Ctrl-C of the virtual board). The firmware polls the pipe once per sample block (select.poll, no
  allocation) and runs the meter's power-fail handler or its clean stop.
- Hold-up: after the edge, the firmware has UMETER_HOLD_UP_MS (default 20) of *simulated* time, counted
  on the simulated flash's clock (its program/erase busy time: sample time stops with the mains). A
  program or erase that would not end within it (typical datasheet times, sim/nor.py) never starts:
  the firmware stops for good and the host's SIGKILL ends it. (CPU time is not modelled: the
  checkpoint's cost is its flash time.)
- Acknowledgement: lines on fd UMETER_VB_PF_ACK_FD: "wired" once the meter watches the input, and
  "done <simulated us used> <checkpoint seq>" when the handler is done, so the host cuts at once.
After the edge no sample block is read any more (the mains are gone): the meter idles until killed."""
import os
import time

DEFAULT_HOLD_UP_MS = 20.0


class PowerRail:
    def __init__(self, clock_us):
        """clock_us(): the simulated clock (µs) that the hold-up is counted on."""
        self._clock_us = clock_us
        self.hold_up_us = int(float(os.getenv("UMETER_HOLD_UP_MS") or DEFAULT_HOLD_UP_MS) * 1000)
        self._poll = None
        self._pf = None
        self._ack = None
        self.deadline = None   # simulated µs after which the supply is gone (None: still powered)
        self.failed = False    # the edge was seen: no more samples
        pf = os.getenv("UMETER_VB_PF_FD")
        if pf:
            import select

            fd = int(pf)
            self._poll = select.poll()
            self._poll.register(fd, select.POLLIN)
            self._pf = open(fd, "rb")  # kept open: closing a file object closes its fd
            ack = os.getenv("UMETER_VB_PF_ACK_FD")
            self._ack = open(int(ack), "wb") if ack else None
            self._tell(b"wired\n")

    def _tell(self, line):
        if self._ack is not None:
            self._ack.write(line)

    @property
    def wired(self):
        return self._poll is not None

    def edge(self):
        """b"P" (power failing), b"S" (clean stop) or None; at most once per boot."""
        if self.failed or self._poll is None or not self._poll.poll(0):
            return None
        self.failed = True
        kind = self._pf.read(1)
        return kind or b"P"  # the host closed the pipe: the supply is gone

    def handle(self, kind, meter):
        """Run the meter's handler within the hold-up time, then tell the host."""
        t0 = self._clock_us()
        if kind == b"P":
            self.deadline = t0 + self.hold_up_us
            seq = meter.power_fail()
        else:
            seq = meter.stop()
        self._tell(b"done %d %d\n" % (self._clock_us() - t0, seq or 0))

    def check(self, duration_us):
        """Before each flash program/erase lasting duration_us: one that would end past the hold-up
        deadline never starts (the supply is gone before it could finish)."""
        if self.deadline is not None and self._clock_us() + duration_us > self.deadline:
            self.dead()

    def dead(self):
        while True:  # nothing runs without power; the host's SIGKILL ends the process
            time.sleep(1)
