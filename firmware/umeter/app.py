"""The meter: board -> stores -> metering -> sealing -> journal; checkpoints; watchdog; status.

A board module (boards/<name>/board.py, installed on the device as board.py) provides:
    NAME, PARTITIONS, CHECKPOINT_S, ENGINE (Engine keyword args), CALIBRATION (dict)
    flash() -> flash device (DESIGN 3.1);  sampler() -> sample source;  keystore() -> KeyStore
    watchdog() -> object with feed(), or None;  power_fail(callback) -> bool (True when wired)
    start_background(step) -> runs step() repeatedly without blocking the REPL (development mode)
Everything here is board-independent. Time is the engine's sample count, never wall time.
"""
import gc
import struct

import micropython

from umeter import records
from umeter.crypto import SealError
from umeter.crypto import rollback
from umeter.crypto.seal import Opener, Sealer
from umeter.hal.keystore import NOT_PROVISIONED
from umeter.metering.engine import Engine
from umeter.store import StoreError
from umeter.store.journal import Journal
from umeter.store.region import partitions
from umeter.store.state import State

SOFTWARE_ID = "umeter 0.1.0"
_CP_KEY = "cp"        # State: seq of the newest checkpoint record (a hint; the journal is the truth)
_BOOTS_KEY = "boots"  # State: boot counter


class Meter:
    def __init__(self, board):
        self.board = board
        self.faults = 0
        self.last_fault = None
        self.tamper = None
        self.store_error = None
        self.refusal = None
        self.stored = 0
        self.refused = 0
        self.restored_from = 0
        self.journal = self.state = self.sealer = self.keystore = None
        self._mark_reset = False
        self._open_stores()
        self._open_crypto()
        self.src = board.sampler()
        make_engine = getattr(board, "engine", None)  # boards with a metering IC bring their own
        if make_engine is not None:
            self.engine = make_engine(self.src)
        else:
            kw = dict(getattr(board, "ENGINE", {}))
            self.engine = Engine.for_source(self.src, calib=getattr(board, "CALIBRATION", None), **kw)
        self._restore_registers()
        self.cp_every = int(getattr(board, "CHECKPOINT_S", 60)) * self.src.rate_hz
        self._next_cp = self.engine.t + self.cp_every
        self.wdt = board.watchdog()
        boots = self._count_boot()
        self.event(records.EV_BOOT, boots, SOFTWARE_ID)
        if self.tamper:
            self.event(records.EV_TAMPER, self.tamper["mark_seq"], self.tamper["reason"])
        self.power_fail_wired = board.power_fail(self._power_fail_irq)
        self.src.start()

    # --- start-up ------------------------------------------------------------------------------------
    def _open_stores(self):
        parts = partitions(self.board.flash(), self.board.PARTITIONS)
        # A store that cannot be parsed is reported and left alone (never wiped): metering goes on.
        try:
            self.journal = Journal(parts["journal"])
        except StoreError as e:
            self.store_error = "journal: %s" % e
        try:
            self.state = State(parts["state"])
        except StoreError as e:
            self.store_error = "state: %s" % e

    def _open_crypto(self):
        ks = self.keystore = self.board.keystore()
        if not ks.provisioned:
            self.refusal = NOT_PROVISIONED
            return
        if self.journal is None:
            self.refusal = "the journal cannot be used (%s)" % self.store_error
            return
        verdict = rollback.check(self.journal, ks.mark(), Opener(ks))
        if verdict.tamper:
            self.tamper = verdict.as_dict()
            self._mark_reset = True
        # A new key epoch at every boot: the flash may have been rolled back to a point after the last
        # high-water mark (undetectable), and its next seqs were then already used as nonces. One small
        # internal-flash write per boot; epochs last 2**32 boots.
        ks.rotate()
        self.sealer = Sealer(ks, ks.epoch)
        self.sealer.resume(verdict.last_seq, verdict.last_tag)

    def _restore_registers(self):
        """Registers from the newest verified checkpoint record at or after the State's hint."""
        if self.journal is None or not self.keystore.provisioned:
            return
        hint = self.state.get(_CP_KEY) if self.state is not None else None
        since = struct.unpack("<Q", hint)[0] if hint and len(hint) == 8 else 0
        opener = Opener(self.keystore)
        best = None
        for seq, rec in self.journal.records(since=since):
            opener.reset()  # checkpoints are anchors: each verifies on its own
            try:
                typ, fields = records.decode(opener.open(seq, rec))
            except (SealError, ValueError):
                continue
            if typ == records.REC_CHECKPOINT:
                best = (seq, fields["snapshot"])
        if best is None and since:
            self.tamper = self.tamper or {"status": "checkpoint_missing", "mark_seq": since,
                                          "flash_seq": self.journal.last_seq,
                                          "reason": "checkpoint seq %d unreadable" % since}
            return
        if best is not None:
            self.engine.restore(best[1])
            self.restored_from = best[0]

    def _count_boot(self):
        if self.state is None:
            return 0
        raw = self.state.get(_BOOTS_KEY)
        boots = (struct.unpack("<I", raw)[0] if raw and len(raw) == 4 else 0) + 1
        self._guard(self.state.put, _BOOTS_KEY, struct.pack("<I", boots))
        return boots

    # --- running -------------------------------------------------------------------------------------
    def step(self):
        """Process the next sample block if one is ready; False when none was."""
        buf = self.src.read_block()
        if buf is None:
            return False
        if self.wdt is not None:
            self.wdt.feed()
        try:
            if self.engine.feed(buf):
                self._after_window()
        except Exception as e:  # a fault in one window never stops metering
            self._fault(e)
        return True

    def run_samples(self, n):
        """Run until n more V,I pairs are metered (the virtual board's accelerated time)."""
        end = self.engine.t + n
        while self.engine.t < end:
            self.step()

    def _after_window(self):
        self._store_profiles()
        if self.engine.t >= self._next_cp:
            self.checkpoint()

    def _store_profiles(self):
        while True:
            rec = self.engine.pop_record()
            if rec is None:
                break
            self.store(records.profile(rec))

    def stop(self):
        """A clean stop (power-fail warning, reset, the virtual board's Ctrl-C): book the window in
        progress when the engine can (end_window), store what it produced, checkpoint. The seq of
        the checkpoint, or 0. A failing end_window is a fault; the checkpoint is taken anyway."""
        end = getattr(self.engine, "end_window", None)
        if end is not None and self._guard(end):
            self._store_profiles()
        return self.checkpoint()

    def checkpoint(self):
        """Seal the registers into the journal, point the State at them, move the high-water mark."""
        self._next_cp = self.engine.t + self.cp_every
        seq = self.store(records.checkpoint(self.engine.snapshot()), anchor=True)
        if not seq:
            return 0
        if self.state is not None:
            self._guard(self.state.put, _CP_KEY, struct.pack("<Q", seq))
        self._guard(rollback.checkpoint, self.keystore, seq, self.sealer.last_tag, self._mark_reset)
        self._mark_reset = False
        return seq

    def store(self, payload, anchor=False):
        """Seal and append one record; its seq, or 0 when records cannot be stored (see status)."""
        if self.sealer is None:
            self.refused += 1
            return 0
        seq = self.journal.next_seq
        got = self.journal.append(self.sealer.seal(seq, payload, anchor=anchor))
        if got != seq:
            raise StoreError("journal stored seq %d, sealed for %d" % (got, seq))
        self.stored += 1
        return seq

    def event(self, code, arg=0, text=""):
        return self._guard(self.store, records.event(code, arg, text))

    def _guard(self, fn, *args):
        try:
            return fn(*args)
        except Exception as e:
            self._fault(e)
            return None

    def _fault(self, e):
        self.faults += 1
        self.last_fault = "%s: %s" % (type(e).__name__, e)
        if self.faults <= 100:  # bounded, so a persistent fault cannot fill the journal
            try:
                self.store(records.event(records.EV_FAULT, self.faults, self.last_fault))
            except Exception:
                pass

    def _power_fail_irq(self, _pin=None):
        micropython.schedule(self.power_fail, 0)

    def power_fail(self, _arg=None):
        """The supply is failing: the event, then a clean stop (the checkpoint is the newest record)."""
        self.event(records.EV_POWER_FAIL, self.engine.t // self.src.rate_hz)
        return self._guard(self.stop)

    # --- status --------------------------------------------------------------------------------------
    def status(self):
        """Everything an operator needs, at any time (no key material)."""
        eng = self.engine
        regs = eng.registers()
        ks = self.keystore
        key = {"provisioned": ks.provisioned}
        if key["provisioned"]:
            key["epoch"] = ks.epoch
            key["key_id"] = ks.key_id()
            key["development"] = bool(getattr(self.board, "DEVELOPMENT_KEY", False))
        return {
            "software": SOFTWARE_ID,
            "board": self.board.NAME,
            "t_s": eng.t // self.src.rate_hz,
            "windows": eng.windows,
            "registers_wh": dict((code, mwh / 1000.0) for code, mwh in regs.items()),
            "window": eng.status,
            "records_stored": self.stored,
            "records_refused": self.refused,
            "refusal": self.refusal,
            "journal": self.journal.stats() if self.journal is not None else None,
            "state": self.state.stats() if self.state is not None else None,
            "store_error": self.store_error,
            "tamper": self.tamper,
            "key": key,
            "faults": self.faults,
            "last_fault": self.last_fault,
            "restored_from_seq": self.restored_from,
            "mem_free": gc.mem_free(),
        }


_meter = None


def start(board, background=True):
    """Boot the meter. Development mode: metering runs in the background and the REPL stays usable."""
    global _meter
    _meter = Meter(board)
    if background:
        board.start_background(_meter.step)
    return _meter


def meter():
    return _meter


def status():
    return _meter.status() if _meter is not None else {"error": "meter not started"}
