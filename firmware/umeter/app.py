"""The meter: board -> stores -> metering -> sealing -> journal; checkpoints; watchdog; status.

A board module (boards/<name>/board.py, installed on the device as board.py) provides:
    NAME, PARTITIONS, CHECKPOINT_S, ENGINE (Engine keyword args), CALIBRATION (dict)
    flash() -> flash device (DESIGN 3.1);  sampler() -> sample source;  keystore() -> KeyStore
    watchdog() -> object with feed(), or None;  power_fail(callback) -> bool (True when wired)
    start_background(step) -> runs step() repeatedly without blocking the REPL (development mode)
    KEY_STORAGE: where keys and the high-water mark live ("internal", "external-unprotected", ...)
    RETENTION_DAYS (optional, 0 = ring retention only): defaults of the operator's settings (SETTINGS.md)
Everything here is board-independent. Time is the engine's sample count; the wall clock is the operator's
time base on it (clock()).
Billing integrity (crypto/SEALED.md 7-8): every durable checkpoint advances the MCU-internal high-water
mark with its registers; at boot each register is at least the mark's floor, the flash is verified
(boot_verify.boot_check) and every tamper verdict goes into the MCU's tamper log and the journal. Before
ring retention drops a sector the meter seals a retention record naming what goes.
"""
import struct

import micropython

from umeter import app_settings, records
from umeter.crypto import boot_verify, rollback
from umeter.crypto.seal import Opener, Sealer, tag_of
from umeter.hal.keystore import NOT_PROVISIONED
from umeter.metering import obis
from umeter.store import StoreError
from umeter.store.journal import Journal
from umeter.store.region import partitions
from umeter.store.state import State

SOFTWARE_ID = "umeter 0.1.0"
_CP_KEY = "cp"        # State: seq of the newest checkpoint record (a hint; the journal is the truth)
_BOOTS_KEY = "boots"  # State: boot counter
_RET_KEY = "ret"      # State: seq of the newest retention record (a hint where the boot check starts)


class Meter:
    def __init__(self, board):
        self.board = board
        self._ota_done = False  # the signed-update health confirmation runs once per boot (_confirm_update)
        self.faults = 0
        self.last_fault = None
        self.tamper = None
        self.store_error = None
        self.refusal = None
        self.stored = 0
        self.refused = 0
        self.restored_from = 0
        self.journal = self.state = self.sealer = self.keystore = self.verdict = None
        self.key_storage = getattr(board, "KEY_STORAGE", "unknown")
        self.keystore_error = None  # the board's keystore could not be opened at all
        self.mark = None            # the high-water mark as read at boot (HighWater) or None
        self.mark_error = None      # why the mark cannot be read or advanced (status says what to do)
        self.floored = []           # registers raised to the mark's floor at this boot
        self.retained = 0           # retention records sealed since boot
        self.verification = None    # the boot check's figures
        self.tamper_log = None
        self.settings_fault = None  # the engine refused the stored settings (board defaults in force)
        self.last_stop_ms = None    # how long the last power-fail stop took (against the hold-up)
        self.last_checkpoint = None  # (seq, engine t) of the newest checkpoint of this boot
        self._open_stores()
        self._open_crypto()
        self.settings = app_settings.load(self)  # the operator's settings over the board's constants
        self.src = board.sampler()
        self.engine = app_settings.make_engine(self)
        self.profile_fields = app_settings.profile_fields(self)
        self._restore_registers()
        self.cp_every = self.settings.checkpoint_s * self.src.rate_hz
        self._next_cp = self.engine.t + self.cp_every
        self.wdt = board.watchdog()
        boots = self._count_boot()
        self.event(records.EV_BOOT, boots, SOFTWARE_ID)
        self._record_tamper()
        self.power_fail_wired = self.settings.power_fail and board.power_fail(self._power_fail_irq)
        self.src.start()

    # --- start-up ------------------------------------------------------------------------------------
    def _open_stores(self):
        parts = partitions(self.board.flash(), self.board.PARTITIONS)
        # A store that cannot be parsed is reported and left alone (never wiped): metering goes on.
        try:
            self.journal = Journal(parts["journal"], on_drop=self._on_drop)
        except StoreError as e:
            self.store_error = "journal: %s" % e
        try:
            self.state = State(parts["state"])
        except StoreError as e:
            self.store_error = "state: %s" % e

    def _open_crypto(self):
        try:
            ks = self.keystore = self.board.keystore()
        except Exception as e:  # an unreadable keystore never stops metering
            self.keystore_error = "%s: %s" % (type(e).__name__, e)
            self.refusal = ("the keystore cannot be read (%s): this meter meters but stores no records; "
                            "check the MCU's storage, then provision again" % self.keystore_error)
            return
        try:
            self.mark = ks.high_water()
        except Exception as e:  # both copies damaged, or unreadable: tamper, never "no mark yet"
            self.mark_error = "%s: %s" % (type(e).__name__, e)
        if not ks.provisioned:
            self.refusal = ks.damage.get("keys") or NOT_PROVISIONED
            return
        if self.journal is None:
            self.refusal = "the journal cannot be used (%s)" % self.store_error
            return
        t0 = _ticks_ms()
        v = self.verdict = boot_verify.boot_check(self.journal, Opener(ks), self.mark, self.mark_error,
                                               self._hint(_RET_KEY), self._hint(_CP_KEY))
        self.verification = {"walked": v.walked, "verified": v.verified, "oldest_seq": v.oldest_seq,
                             "retention_seq": v.retention[0] if v.retention else 0,
                             "ms": _ticks_ms() - t0}
        if v.tamper:
            self.tamper = v.as_dict()
        # A new key epoch at every boot: the flash may have been rolled back to a point after the last
        # high-water mark (undetectable), and its next seqs were then already used as nonces. One small
        # internal-flash write per boot; epochs last 2**32 boots.
        try:
            ks.rotate()
        except Exception as e:
            self.refusal = ("a new key epoch cannot be started (%s: %s): storing would reuse nonces, so "
                            "this meter meters but stores no records; check the MCU's storage"
                            % (type(e).__name__, e))
            return
        self.sealer = Sealer(ks, ks.epoch)
        self.sealer.resume(v.last_seq, v.last_tag)

    def _hint(self, key):
        raw = self.state.get(key) if self.state is not None else None
        return struct.unpack("<Q", raw)[0] if raw and len(raw) == 8 else 0

    def _restore_registers(self):
        """Each register: the newest verified checkpoint's, but never below the high-water mark's floor
        (also without a key, when no checkpoint can be opened)."""
        v = self.verdict
        cp = v.checkpoint if v is not None else None
        floors = self.mark.registers if self.mark is not None else {}
        if cp is None and not any(floors.values()):
            return
        frac = self.engine.snapshot()[1]
        snap = cp[1] if cp is not None and cp[1][1] == frac else None
        self.floored = boot_verify.below_floor(snap, floors) if snap is not None else \
            [c for c in floors if floors[c] > 0]
        try:
            self.engine.restore(boot_verify.with_floors(snap, floors, frac))
        except ValueError as e:
            self._fault(e)
            return
        if snap is not None:
            self.restored_from = cp[0]

    def _record_tamper(self):
        """Every tamper verdict goes into the MCU's tamper log (it outlives the flash) and the journal."""
        ks = self.keystore
        if ks is None:
            return
        log = self._guard(ks.tamper_log)
        epoch = ks.last_epoch
        if log is not None and log.damaged:
            self._guard(ks.record_tamper, rollback.CODES[rollback.TAMPER_LOG_DAMAGED], epoch, 0, 0)
            self.event(records.EV_TAMPER, 0, "the MCU's tamper log was damaged: rewritten, counted as tamper")
        v = self.verdict
        if v is None and self.mark_error is not None:  # no key: the mark's damage is still tamper
            v = rollback.Verdict(rollback.MARK_DAMAGED, "the high-water mark cannot be read (%s)"
                                 % self.mark_error, 0, 0, None)
            self.tamper = v.as_dict()
        if v is not None and v.tamper:
            self._guard(ks.record_tamper, v.code, epoch, v.mark_seq, v.last_seq)
            self.event(records.EV_TAMPER, v.mark_seq, v.reason)
            for _, reason in v.problems[1:3]:
                self.event(records.EV_TAMPER, v.mark_seq, reason)
        self.tamper_log = self._guard(ks.tamper_log)

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
            self.store(records.profile(rec, self.profile_fields))

    def stop(self):
        """A clean stop (power-fail warning, reset, the virtual board's Ctrl-C): book the window in
        progress when the engine can (end_window), store what it produced, checkpoint. The seq of
        the checkpoint, or 0. A failing end_window is a fault; the checkpoint is taken anyway."""
        end = getattr(self.engine, "end_window", None)
        if end is not None and self._guard(end):
            self._store_profiles()
        return self.checkpoint()

    def checkpoint(self):
        """Seal the registers into the journal, point the State at them, advance the high-water mark."""
        self._next_cp = self.engine.t + self.cp_every
        snap = self.engine.snapshot()
        seq = self.store(records.checkpoint(snap), anchor=True)
        if not seq:
            return 0
        tag = self.sealer.last_tag  # this checkpoint's tag: nothing else is sealed before the mark moves
        self.last_checkpoint = (seq, snap[2])
        if self.state is not None:
            self._guard(self.state.put, _CP_KEY, struct.pack("<Q", seq))
        self._advance_mark(seq, tag, snap)
        if not self._ota_done and self.engine.windows:  # healthy: windows computed, a checkpoint sealed,
            self._ota_done = True                          # the mark moved: end a signed update's trial
            from umeter import app_ota

            app_ota.confirm_update(self)
        if self.settings.retention_days > 0:
            self._guard(app_settings.expire, self)  # records older than the setting, each drop proven
        return seq

    def clock(self):
        """Wall-clock unix seconds (the operator's time base on engine time), or None if never set."""
        return app_settings.clock(self)

    def _advance_mark(self, seq, tag, snap):
        # the mark only moves forward: (epoch, seq) grows with the boot's epoch even when the flash's
        # seqs restarted lower after a rollback, and the floors are what this checkpoint holds
        frac = snap[1]
        regs = {}
        for k, code in enumerate(obis.REGISTERS):
            regs[code] = snap[3 + k] >> frac
        try:
            self.keystore.advance_mark(seq, tag, self.sealer.epoch, regs)
        except Exception as e:
            self.mark_error = ("%s: %s; the registers are sealed in the journal but have no MCU-internal "
                               "floor: check the MCU's storage" % (type(e).__name__, e))
            self._fault(e)
            return
        self.mark_error = None
        self.mark = _Mark(seq, self.sealer.epoch, regs)

    def store(self, payload, anchor=False):
        """Seal and append one record; its seq, or 0 when records cannot be stored (see status)."""
        if self.sealer is None:
            self.refused += 1
            return 0
        # Room first, for the largest record this payload can become: a ring drop (and the retention
        # record its on_drop seals) happens here, before this record is sealed, so make_room's seq is the
        # one append gives it. The first record of a sector is an anchor (its predecessor's tag inside,
        # 33 bytes): once the sector before it is dropped, the oldest record still verifies on its own.
        seq = self.journal.make_room(len(payload) + self.sealer.overhead(True))
        anchor = anchor or self.journal.head_records == 0
        got = self.journal.append(self.sealer.seal(seq, payload, anchor=anchor))
        if got != seq:
            raise StoreError("journal stored seq %d, sealed for %d" % (got, seq))
        self.stored += 1
        return seq

    def _on_drop(self, first, last):
        """The journal is about to drop seqs first..last (ring or age retention): seal a retention record
        naming them and the oldest record kept, into the head's reserve, before anything is erased. It
        comes from store()'s make_room or from retention.expire, never from inside an append, so it is
        an ordinary record."""
        if self.sealer is None:
            return  # nothing to seal with: the drop goes ahead unproven (the boot check says so)
        kept_seq, kept_tag = 0, b""
        for kept_seq, rec in self.journal.records(since=last + 1):
            kept_tag = tag_of(rec)
            break
        seq = self._guard(self.store, records.retention(first, last, kept_seq, kept_tag), True)
        if seq:
            self.retained += 1
            if self.state is not None:
                self._guard(self.state.put, _RET_KEY, struct.pack("<Q", seq))

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
        """The supply is failing: the event, then a clean stop (the checkpoint is the newest record). The
        operator's setting may turn the warning off (a noisy input): then nothing happens."""
        if not self.settings.power_fail:
            return 0
        t0 = _ticks_ms()
        self.event(records.EV_POWER_FAIL, self.engine.t // self.src.rate_hz)
        seq = self._guard(self.stop)
        self.last_stop_ms = _ticks_ms() - t0  # status compares it with the hold-up setting
        return seq

    # --- status --------------------------------------------------------------------------------------
    def status(self):
        """Everything an operator needs, at any time (no key material): umeter/app_status.py."""
        from umeter import app_status  # loaded on first use: the boot's heap does not carry it

        return app_status.status(self)


class _Mark:
    """What status shows of the mark last written (no tag)."""

    def __init__(self, seq, epoch, registers):
        self.seq, self.epoch, self.registers = seq, epoch, registers


def _ticks_ms():
    try:
        import time

        return time.ticks_ms()
    except AttributeError:
        return 0


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
