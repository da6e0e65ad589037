"""Host side of the virtual board's power-fail input (firmware side: host_tools/vboard/powerrail.py).

    line = PowerFailLine(hold_up_ms=20)         # one per firmware process
    env.update(line.env()); Popen(..., pass_fds=line.child_fds()); line.started()
    line.warn()        # the supply fails: raise the input, wait for the firmware's acknowledgement
    line.clean_stop()  # Ctrl-C of the virtual board: book the open window and checkpoint
    line.close()
With hold_up_ms == 0 there is no warning: warn() returns at once and the cut loses what the last
checkpoint did not cover. The acknowledgement wait is bounded (ACK_TIMEOUT wall seconds): the hold-up
itself is enforced by the firmware on its simulated clock."""
import os
import select

DEFAULT_HOLD_UP_MS = 20.0
ACK_TIMEOUT = 5.0


class PowerFailLine:
    def __init__(self, hold_up_ms=DEFAULT_HOLD_UP_MS):
        self.hold_up_ms = float(hold_up_ms)
        self._pf_r, self._pf_w = os.pipe()
        self._ack_r, self._ack_w = os.pipe()
        self.last_ack = None  # (simulated us used, checkpoint seq) of the last handled edge
        self.wired = False    # the firmware announced it watches the input

    def env(self):
        return {"UMETER_VB_PF_FD": str(self._pf_r), "UMETER_VB_PF_ACK_FD": str(self._ack_w),
                "UMETER_HOLD_UP_MS": repr(self.hold_up_ms)}

    def child_fds(self):
        return (self._pf_r, self._ack_w)

    def started(self):
        """After the child was spawned: the parent keeps only its own ends."""
        for fd in (self._pf_r, self._ack_w):
            os.close(fd)
        self._pf_r = self._ack_w = None

    def warn(self):
        """Raise the power-fail input (if there is a warning at all) and wait until the firmware is done
        or gone; True when it acknowledged."""
        if self.hold_up_ms <= 0:
            return False
        return self._edge(b"P")

    def clean_stop(self):
        return self._edge(b"S")

    def _read_lines(self, timeout):
        """Lines the firmware wrote on the acknowledgement pipe within timeout seconds."""
        if not select.select([self._ack_r], [], [], timeout)[0]:
            return []
        data = os.read(self._ack_r, 4096)
        return data.decode("ascii", "replace").split("\n") if data else []

    def _wired(self):
        """Has the firmware said it watches the input (a meter booted)? Boards running other code never
        answer, so they must not make every stop wait."""
        if not self.wired:
            self.wired = any(line == "wired" for line in self._read_lines(0))
        return self.wired

    def _edge(self, kind):
        if not self._wired():
            return False
        try:
            os.write(self._pf_w, kind)
        except OSError:  # the firmware is already gone
            return False
        for line in self._read_lines(ACK_TIMEOUT):
            words = line.split()
            if len(words) == 3 and words[0] == "done":
                self.last_ack = (int(words[1]), int(words[2]))
                return True
        return False

    def close(self):
        for fd in (self._pf_r, self._pf_w, self._ack_r, self._ack_w):
            if fd is not None:
                os.close(fd)
        self._pf_r = self._pf_w = self._ack_r = self._ack_w = None
