# The app's console handlers (console/handlers.py) over a real Meter on the unix port (both lanes): every
# privileged command is a sealed EV_CONSOLE record naming its role, a command whose event cannot be sealed
# is refused, paged answers fit together, export hands out the sealed records, calibration by role, the
# reset to the original state and the operator's reboot act only after their answer (the reboot checkpoints
# first), the reader's event log (newest events, paged, bounded walks forward from a seq).
import json
import struct

from app_boards import SampleBoard
from mptest import tmpdir
from mpt_console_kit import Host, error_of, ROLE_KEYS
from umeter import records
from umeter.app import Meter
from umeter.console import mode, roles
from umeter.console.console import Console
from umeter.console.framing import ERR_FORBIDDEN, ERR_INTERNAL, ERR_BAD_PAYLOAD
from umeter.console.handlers import Handlers, public_line, RESET_CONFIRM, EVENT_LOG_MAX, EVENT_LOG_SCAN
from umeter.crypto.seal import Opener

HEAPSIZE = "16M"


def production(provision=True):
    board = SampleBoard(tmpdir(), provision=provision)
    meter = Meter(board)
    resets = []
    h = Handlers(meter, board, mode.Mode(mode.PRODUCTION, 1), reset=lambda: resets.append(1))
    c = Console(board.keystore().backend, h.table(), public_line("umeter 0.1.0", "SN1", "production"),
                h.on_event)
    h.bind(c)
    for role, key in ROLE_KEYS.items():
        c.rolekeys.set_key(role, key)
    return meter, h, c, resets


def console_events(meter):
    opener = Opener(meter.keystore)
    out = []
    for seq, rec in meter.journal.records():
        typ, body = records.decode(opener.open(seq, rec))
        if typ == records.REC_EVENT and body["code"] == records.EV_CONSOLE:
            out.append(body["text"])
    return out


def paged(host, command):
    out = b""
    total = None
    while total is None or len(out) < total:
        a = host.request(roles.CODES[command], struct.pack(">I", len(out)))
        assert not error_of(a), a
        total = struct.unpack(">I", a.payload[:4])[0]
        out += a.payload[4:]
    return out


def test_roles_events_and_answers():
    meter, h, c, resets = production()
    meter.run_samples(4000 * 12)
    host = Host(c)
    assert host.request(roles.HELLO).payload == b"umeter|umeter 0.1.0|SN1|production"
    assert not error_of(host.login(roles.READER))
    st = json.loads(paged(host, "status"))
    assert len(json.dumps(st)) > 1020  # really paged
    assert st["mode"] == "production" and st["key"]["protected"] is False
    assert st["console"]["session"] == "reader"
    assert "production_note" in st["key"]
    change = json.dumps({"i_gain": 1.02}).encode()
    assert error_of(host.request(roles.CODES["calibration"], change)) == ERR_FORBIDDEN
    # export: summary, then the sealed records exactly as the journal holds them
    info = json.loads(paged(host, "export"))
    assert info["last_seq"] == meter.journal.last_seq and info["mark"]["seq"] > 0
    got = []
    since = 0
    while True:
        a = host.request(roles.CODES["export"], struct.pack(">Q", since))
        p = a.payload
        nxt = struct.unpack(">Q", p[:8])[0]
        at = 8
        while at < len(p):
            seq, n = struct.unpack(">QH", p[at:at + 10])
            got.append((seq, p[at + 10:at + 10 + n]))
            at += 10 + n
        if not nxt:
            break
        since = nxt
    assert got == [(s, bytes(r)) for s, r in meter.journal.records()]
    assert not error_of(host.login(roles.OPERATOR))
    a = host.request(roles.CODES["calibration"], change)
    assert not error_of(a) and abs(json.loads(a.payload)["i_gain"] - 1.02) < 1e-6
    assert abs(meter.engine.calib["i_gain"] - 1.02) < 1e-6
    assert abs(meter.settings.calibration["i_gain"] - 1.02) < 1e-6  # stored: the next boot has it too
    a = host.request(roles.CODES["set_checkpoint"])
    assert struct.unpack(">Q", a.payload)[0] == meter.journal.last_seq
    assert error_of(host.request(roles.CODES["factory_reset"], RESET_CONFIRM)) == ERR_FORBIDDEN
    assert not error_of(host.login(roles.ADMIN))
    assert error_of(host.request(roles.CODES["factory_reset"], b"please")) == ERR_BAD_PAYLOAD
    assert resets == []
    assert host.request(roles.CODES["factory_reset"], RESET_CONFIRM).payload == b"resetting"
    assert resets == [] and mode.load(meter.keystore.backend).mode == mode.RESETTING
    h.after()  # the serve loop's next step: the answer is out, now the reset
    assert resets == [1]
    ev = console_events(meter)
    for text in ("reader ", "operator calibration", "operator set_checkpoint", "admin factory_reset"):
        assert any(e.startswith(text) for e in ev), (text, ev)
    assert not any(e.startswith("reader calibration") for e in ev)
    assert not any(e.startswith("operator factory_reset") for e in ev)


def test_no_sealed_event_no_privileged_command():
    meter, h, c, resets = production(provision=False)  # no master key: nothing can be sealed
    host = Host(c)
    assert not error_of(host.login(roles.OPERATOR))
    before = dict(meter.engine.calib)
    assert error_of(host.request(roles.CODES["calibration"], b'{"v_gain": 2}')) == ERR_INTERNAL
    assert meter.engine.calib == before
    assert not error_of(host.login(roles.READER))
    assert not error_of(host.request(roles.CODES["registers"]))  # the reader's readout still works


def _all_events(meter):
    opener = Opener(meter.keystore)
    out = []
    for seq, rec in meter.journal.records():
        body = opener.open(seq, rec)
        if body is not None and body[0] == records.REC_EVENT:
            out.append((seq, records.decode(body)[1]["text"]))
    return out


def test_event_log_newest_paged_and_since():
    meter, h, c, resets = production()
    for i in range(40):
        meter.event(records.EV_FAULT, i, "fault number %d with some words to make the answer long" % i)
    host = Host(c)
    assert not error_of(host.login(roles.READER))
    log = json.loads(paged(host, "event_log"))
    assert len(json.dumps(log)) > 1020  # really paged
    want = _all_events(meter)
    assert len(want) > 40 and want[0][1] == "umeter 0.1.0"  # the boot event first
    assert [(e["seq"], e["text"]) for e in log["events"]] == want[-32:]
    faults = [e for e in log["events"] if e["event"] == "fault"]
    assert faults[-1]["arg"] == 39 and faults[-1]["code"] == records.EV_FAULT
    assert log["events"][-1]["text"] == "reader "  # the login, sealed after them
    assert log["next_since"] == 0 and log["unreadable"] == 0
    # many records without events: the newest-first view walks at most EVENT_LOG_SCAN records ...
    for _ in range(EVENT_LOG_SCAN + 20):
        meter.checkpoint()
    log = json.loads(paged(host, "event_log"))
    assert log["walked"] == EVENT_LOG_SCAN and log["events"] == [] and log["from_seq"] > want[-1][0]
    # ... and since walks forward from any seq in bounded steps, together every event
    got = []
    since = 1
    while since:
        a = host.request(roles.CODES["event_log"], struct.pack(">QI", since, 0))
        total = struct.unpack(">I", a.payload[:4])[0]
        text = a.payload[4:]
        while len(text) < total:
            text += host.request(roles.CODES["event_log"], struct.pack(">QI", since, len(text))).payload[4:]
        page = json.loads(text)
        assert len(page["events"]) <= EVENT_LOG_MAX and page["walked"] <= EVENT_LOG_SCAN
        got.extend((e["seq"], e["text"]) for e in page["events"])
        since = page["next_since"]
    assert got == _all_events(meter)
    assert error_of(host.request(roles.CODES["event_log"], b"\x00" * 5)) == ERR_BAD_PAYLOAD


def test_reboot_checkpoints_first():
    meter, h, c, resets = production()
    meter.run_samples(4000 * 3)
    host = Host(c)
    assert not error_of(host.login(roles.READER))
    assert error_of(host.request(roles.CODES["reboot"])) == ERR_FORBIDDEN
    assert not error_of(host.login(roles.OPERATOR))
    before = meter.journal.last_seq
    a = host.request(roles.CODES["reboot"])
    assert not error_of(a) and "reboot" in json.loads(a.payload)
    assert resets == [] and meter.journal.last_seq == before + 1  # only the sealed event so far
    h.after()  # the serve loop's next step: the answer is out, now the clean stop and the reset
    assert resets == [1]
    opener = Opener(meter.keystore)
    last = None
    for seq, rec in meter.journal.records():
        last = opener.open(seq, rec)
    assert records.decode(last)[0] == records.REC_CHECKPOINT
    assert meter.keystore.high_water().seq == meter.journal.last_seq
    assert "operator reboot" in console_events(meter)


def test_ota_commands_load_on_first_use():
    meter, h, c, resets = production()
    assert h._ota is None  # nothing of the OTA path at boot
    host = Host(c)
    assert error_of(host.request(roles.CODES["ota_begin"], b"x")) != 0
    assert not error_of(host.login(roles.OPERATOR))
    assert error_of(host.request(roles.CODES["ota_begin"], b"x")) == ERR_FORBIDDEN and h._ota is None
    assert not error_of(host.login(roles.ADMIN))
    a = host.request(roles.CODES["ota_data"], b"")  # no update begun: the OTA module's own refusal
    assert error_of(a) == ERR_BAD_PAYLOAD, a
    first = h._ota
    assert type(first).__name__ == "OtaCommands"
    host.request(roles.CODES["ota_finish"], b"")
    assert h._ota is first  # one per Handlers
    h.after()
    assert resets == []  # nothing installed: no reboot


def test_ota_chunks_are_not_sealed_one_by_one_and_logout_aborts():
    meter, h, c, resets = production()
    host = Host(c)
    assert not error_of(host.login(roles.ADMIN))
    before = len(console_events(meter))
    for _ in range(5):
        host.request(roles.CODES["ota_data"], b"\x00" * 8)
    host.request(roles.CODES["ota_begin"], b"x")
    texts = console_events(meter)[before:]
    assert texts == ["admin ota_begin"], texts  # the begin is sealed, no chunk is
    # an update under way is dropped once the admin session ends
    h._ota.state = lambda: "receiving"
    aborted = []
    h._ota.abort = lambda: aborted.append(1)
    h.after()
    assert aborted == []  # still the admin's session
    host.request(roles.LOGOUT)
    h.after()
    assert aborted == [1]
