# The app's console commands (FRAMING.md section 6, payloads in MODE.md section 3), on the Meter's public
# surface only: status(), engine, journal, keystore, settings, checkpoint(), event(), stop(). Answers are at
# most 1024 bytes: long JSON answers are paged (request: offset u32; answer: total u32 || bytes), and the
# text of one reading is kept between its pages so they fit together. A reboot a command asks for runs
# after its answer went out (after(), called by the serve loop's step).
import json
import struct

from umeter import records
from umeter.console import mode as modes
from umeter.console.console import CommandError
from umeter.console.framing import ERR_BAD_PAYLOAD, ERR_INTERNAL, MAX_PAYLOAD
from umeter.console.handlers_settings import DEFERRED, SettingsCommands, sealer_for
from umeter.console.rolekeys import KEY_LEN
from umeter.console.roles import EV_ACTION, READER, OPERATOR, ADMIN

_PAGE = MAX_PAYLOAD - 4
_RECORD_HEAD = 10             # seq u64 || length u16 per exported record
RESET_CONFIRM = b"reset to original state"
EVENT_LOG_MAX = 32            # events per event_log answer (the newest, or the next from since)
EVENT_LOG_SCAN = 256          # records opened per event_log request at most: bounded time


def _page(text, payload):
    if len(payload) not in (0, 4):
        raise CommandError(ERR_BAD_PAYLOAD, "offset u32 or nothing")
    at = struct.unpack(">I", payload)[0] if payload else 0
    return struct.pack(">I", len(text)) + text[at:at + _PAGE]


def _json(obj):
    return json.dumps(obj).encode()


def public_line(software_id, serial, mode_name):
    return ("umeter|%s|%s|%s" % (software_id, serial, mode_name)).encode()


class Handlers:
    """Handlers(meter, board, mode): .table() is the `handlers` dict for Console; bind(console) once the
    console exists (status shows its role keys' state); after() runs a reboot a command asked for."""

    def __init__(self, meter, board, mode, reset=None):
        self.meter = meter
        self.board = board
        self.mode = mode
        self.console = None
        self._pages = {}
        self._reboot = None        # None, "stop" (clean stop first) or "now"
        self._reset = reset        # callable: the MCU reset (machine.reset)
        self._actor = "local"      # the role of the command running (on_event names it just before)
        self._settings = SettingsCommands(meter, sealer_for(meter, self._role))
        self._ota = None           # handlers_ota.OtaCommands, made on the first OTA command

    def __repr__(self):
        return "<Handlers %s>" % self.mode.name

    def bind(self, console):
        self.console = console

    def table(self):
        s = self._settings
        out = {"status": self.status, "registers": self.registers, "software_id": self.software_id,
               "export": self.export, "event_log": self.event_log, "reboot": self.reboot,
               "ota_begin": self.ota_begin, "ota_data": self.ota_data, "ota_finish": self.ota_finish,
               "set_mode": self.set_mode, "factory_reset": self.factory_reset, "provision": self.provision,
               "rotate_key": self.rotate_key}
        for name in DEFERRED:
            out[name] = s.command(name)
        return out

    def on_event(self, code, role, detail):
        """Console events become sealed EV_CONSOLE records. Raises when the record cannot be sealed: the
        console then refuses the privileged command. A settings command's action is sealed by its handler
        instead, right after this call, once it knows the change ("operator set_retention 365")."""
        if code == EV_ACTION and detail in DEFERRED:
            self._actor = role
            return
        if code == EV_ACTION and detail == "ota_data":
            return  # one chunk of an update the sealed "ota_begin" opened: ~480 records per app otherwise
        if not self.meter.event(records.EV_CONSOLE, code, ("%s %s" % (role, detail))[:120]):
            raise CommandError(ERR_INTERNAL, "event log unavailable")

    def _role(self):
        role, self._actor = self._actor, "local"   # one command per announcement
        return role

    def after(self):
        """Called between console turns: the reboot a command asked for, once its answer is written."""
        why = self._reboot
        if self._ota is not None and self.console is not None and self.console.role != "admin" \
                and self._ota.state() != "idle":
            self._ota.abort()  # an unfinished update never outlives the admin session that began it
        if why is None and self._ota is not None and self._ota.reboot_wanted():
            why = "stop"  # an installed update boots into its trial slot
        if why is None:
            return
        self._reboot = None
        if why == "stop":
            try:
                self.meter.stop()
            except Exception:
                pass
        if self._reset is not None:
            self._reset()

    # --- reader ---------------------------------------------------------------------------------------
    def _paged(self, name, payload, make):
        if not payload or payload == b"\x00\x00\x00\x00" or name not in self._pages:
            self._pages[name] = make()
        text = self._pages[name]
        out = _page(text, payload)
        if len(out) - 4 < _PAGE:  # the last page went out: free the text (heap is small on the boards)
            del self._pages[name]
        return out

    def status_dict(self):
        st = self.meter.status()
        st["mode"] = self.mode.name
        st["key"]["protected"] = modes.protected(self.board)
        if self.mode.locked and not modes.protected(self.board):
            st["key"]["production_note"] = ("production mode on unprotected key storage, accepted at "
                                            "provisioning (--accept-unprotected-keys)")
        st["reset_note"] = modes.load_note(self.meter.keystore.backend).as_dict()
        if self.console is not None:
            st["console"] = self.console.status()
        return st

    def status(self, payload):
        return self._paged("status", payload, lambda: _json(self.status_dict()))

    def registers(self, payload):
        regs = self.meter.engine.registers()
        return _json({"registers_mwh": dict((k, int(v)) for k, v in regs.items()), "t": self.meter.engine.t})

    def software_id(self, payload):
        def make():
            from umeter import app
            info = {"version": getattr(app, "SOFTWARE_ID", None)}
            try:
                from umeter.ota import slots
                ident = slots.identity()
                if ident.get("version") is None:
                    ident["version"] = info["version"]
                info = ident
            except Exception as e:
                info["error"] = type(e).__name__
            info["console_mode"] = self.mode.name
            return _json(info)
        return self._paged("software_id", payload, make)

    def export(self, payload):
        """Empty payload (or offset u32): the journal's summary, the high-water mark and the tamper log
        (paged JSON). since u64: sealed records from `since`: next u64 (0: no more) || (seq u64, len u16,
        record)*."""
        if len(payload) != 8:
            return self._paged("export", payload if len(payload) == 4 else b"", self._summary)
        since = struct.unpack(">Q", payload)[0]
        j = self.meter.journal
        if j is None:
            raise CommandError(ERR_INTERNAL, "no journal")
        out = bytearray(8)
        nxt = 0
        for seq, rec in j.records(since):
            if len(out) + _RECORD_HEAD + len(rec) > MAX_PAYLOAD:
                if len(out) == 8:
                    raise CommandError(ERR_INTERNAL, "record too long")
                nxt = seq
                break
            out.extend(struct.pack(">QH", seq, len(rec)))
            out.extend(rec)
        struct.pack_into(">Q", out, 0, nxt)
        return bytes(out)

    def _summary(self):
        from binascii import hexlify
        j = self.meter.journal
        st = j.stats() if j is not None else {}
        ks = self.meter.keystore
        out = {"last_seq": st.get("last_seq", 0), "oldest_seq": st.get("oldest_seq", 0),
               "corrupt_skipped": st.get("corrupt_skipped", 0), "records": st.get("records", 0),
               "sector_size": j.dev.sector_size if j is not None else 0}
        try:
            hw = ks.high_water()
            out["mark"] = None if hw is None else {"seq": hw.seq, "epoch": hw.epoch,
                                                   "tag": hexlify(hw.tag).decode(), "registers": hw.registers}
        except Exception as e:
            out["mark"] = {"problem": str(e)}
        t = ks.tamper_log()
        out["tamper"] = {"count": t.count, "active": bool(t.active)}
        return _json(out)

    def event_log(self, payload):
        """Request: nothing | offset u32 (a later page) | since u64 | since u64 || offset u32. Paged JSON:
        without since the newest EVENT_LOG_MAX events among the newest EVENT_LOG_SCAN records; with since
        the first EVENT_LOG_MAX events from seq `since` on, and `next_since` to go on (0: up to date)."""
        n = len(payload)
        if n not in (0, 4, 8, 12):
            raise CommandError(ERR_BAD_PAYLOAD, "since u64 and/or offset u32")
        since = struct.unpack(">Q", payload[:8])[0] if n >= 8 else 0
        offset = payload[8:] if n == 12 else payload if n == 4 else b""
        return self._paged("event_log", offset, lambda: _json(self._events(since)))

    def _events(self, since):
        from umeter.crypto.seal import Opener
        j = self.meter.journal
        ks = self.meter.keystore
        if j is None or ks is None or not ks.provisioned:
            return {"events": [], "error": "no journal" if j is None else "no key: records cannot be opened"}
        last = j.last_seq
        start = since if since else last - EVENT_LOG_SCAN + 1
        if start < 1:
            start = 1
        ring = []           # newest last; at most EVENT_LOG_MAX decoded events are held
        opener = Opener(ks)
        walked = unreadable = 0
        nxt = 0
        # one record before `start` first: it only starts the chain, so `start` itself can be verified
        for seq, rec in j.records(start - 1 if start > 1 else 0):
            if seq > last:
                break
            try:
                body = opener.open(seq, rec)
            except Exception:   # damaged or not openable: counted, the chain starts again after it
                opener.reset()
                unreadable += 1
                continue
            if seq < start:
                continue
            walked += 1
            if body is not None and body[0] == records.REC_EVENT:
                ev = records.decode(body)[1]
                ring.append({"seq": seq, "event": ev["event"], "code": ev["code"], "arg": ev["arg"],
                             "text": ev["text"]})
                if len(ring) > EVENT_LOG_MAX:
                    ring.pop(0)
                if since and len(ring) == EVENT_LOG_MAX:
                    nxt = seq + 1
                    break
            if walked >= EVENT_LOG_SCAN:
                if since and seq < last:
                    nxt = seq + 1
                break
        return {"events": ring, "from_seq": start, "last_seq": last, "walked": walked,
                "unreadable": unreadable, "next_since": nxt}

    # --- operator (the settings commands: handlers_settings.py) -------------------------------------
    def reboot(self, payload):
        """A clean stop (the open window booked, a checkpoint), then the MCU reset: after the answer."""
        if payload:
            raise CommandError(ERR_BAD_PAYLOAD, "no payload")
        self._reboot = "stop"
        return _json({"reboot": "after this answer, checkpoint first"})

    # --- admin ----------------------------------------------------------------------------------------
    def set_mode(self, payload):
        """b"development": the REPL opens at the next boot (the meter stops cleanly and reboots now)."""
        if payload == b"development":
            modes.set_development(self.meter.keystore.backend)
        elif payload not in (b"production",):
            raise CommandError(ERR_BAD_PAYLOAD, "development or production")
        self._reboot = "stop"
        return payload

    def factory_reset(self, payload):
        """Reset to the original state (MODE.md section 4): noted, then finished by the boot stage."""
        if payload != RESET_CONFIRM:
            raise CommandError(ERR_BAD_PAYLOAD, "payload must be %r" % RESET_CONFIRM.decode())
        modes.begin_reset(self.meter.keystore)
        self._reboot = "now"
        return b"resetting"

    def provision(self, payload):
        """master 32 || reader 32 || operator 32 || admin 32: a new master key (a new key epoch, above every
        one before) and the three role keys. Answer: JSON of key ids and the epoch."""
        if len(payload) != 4 * KEY_LEN:
            raise CommandError(ERR_BAD_PAYLOAD, "master + reader + operator + admin keys, 32 bytes each")
        ks = self.meter.keystore
        master = payload[:KEY_LEN]
        if ks.provisioned:
            epoch = ks.rotate(master)
        else:
            epoch = ks.provision(master, modes.next_epoch(ks))
        ids = {}
        for i, role in enumerate((READER, OPERATOR, ADMIN)):
            o = KEY_LEN * (i + 1)
            ids[str(role)] = self.console.rolekeys.set_key(role, payload[o:o + KEY_LEN])
        self._reboot = "stop"   # records are sealed under the new key from the next boot
        return _json({"key_id": ks.key_id(epoch), "epoch": epoch, "role_key_ids": ids})

    def rotate_key(self, payload):
        """A new master key (32 bytes), from the next key epoch; the meter reboots into it."""
        if len(payload) != KEY_LEN:
            raise CommandError(ERR_BAD_PAYLOAD, "32-byte master key")
        ks = self.meter.keystore
        epoch = ks.rotate(payload)
        self._reboot = "stop"
        return _json({"key_id": ks.key_id(epoch), "epoch": epoch})

    # --- OTA (handlers_ota.py, loaded on the first OTA command) -----------------------------------------
    def _ota_commands(self):
        if self._ota is None:
            from umeter.console import handlers_ota

            self._ota = handlers_ota.OtaCommands(self.meter, self.board)
        return self._ota

    def ota_begin(self, payload):
        return self._ota_commands().ota_begin(payload)

    def ota_data(self, payload):
        return self._ota_commands().ota_data(payload)

    def ota_finish(self, payload):
        return self._ota_commands().ota_finish(payload)
