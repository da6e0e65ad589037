# The operator's settings over the production console on a real Meter (both lanes): every change persists
# across a reboot (a new Meter on the same board), the reader is refused, out-of-range values are refused
# with an error frame and change nothing, each change is a sealed EV_CONSOLE event naming it, a damaged
# settings blob gives the board's defaults and a note while metering goes on, set_time gives a clock.
import json
import struct

from mpt_console_kit import Host, error_of
from mpt_production_handlers import production, console_events
from umeter import settings
from umeter.app import Meter
from umeter.console import roles
from umeter.console.framing import ERR_BAD_PAYLOAD, ERR_FORBIDDEN, parse_error

HEAPSIZE = "16M"
RATE = 4000   # the test board's sample rate (sim.grid)
UNIX = 1764590000

CHANGES = [  # (command, payload) of one change per setting
    ("set_time", struct.pack(">Q", UNIX)),
    ("calibration", b'{"i_gain": 1.02, "phase_deg": 0.5}'),
    ("set_interval", b'{"period_min": 5}'),
    ("set_retention", b'{"days": 365}'),
    ("set_power_fail", b'{"enabled": false, "hold_up_ms": 35}'),
    ("set_checkpoint", b'{"interval_s": 120}'),
]
EVENTS = ["operator set_time %d" % UNIX, "operator calibration i_gain=1.02 phase_deg=0.5",
          "operator set_interval 5", "operator set_retention 365",
          "operator set_power_fail enabled=false hold_up_ms=35", "operator set_checkpoint interval_s=120"]

BAD = [  # out of range or malformed: refused, nothing changes
    ("set_time", struct.pack(">Q", 12)), ("set_time", b"\x00" * 4),
    ("calibration", b'{"i_gain": 7}'), ("calibration", b'{"x_gain": 1}'), ("calibration", b"[1]"),
    ("set_interval", b'{"period_min": 7}'), ("set_interval", b'{"period_min": "15"}'),
    ("set_interval", b'{"minutes": 15}'), ("set_retention", b'{"days": 7301}'),
    ("set_retention", b'{"days": -1}'), ("set_retention", b"not json"),
    ("set_power_fail", b'{"enabled": 1}'), ("set_power_fail", b'{"hold_up_ms": 0}'),
    ("set_checkpoint", b'{"interval_s": 5}'), ("set_checkpoint", b'{"interval_s": 3601}'),
    ("set_checkpoint", b"{}"),
]


def _blob(meter):
    return meter.keystore.backend.load(settings.BLOB)


def test_changes_persist_and_are_logged():
    meter, h, c, resets = production()
    meter.run_samples(RATE * 2)
    assert meter.clock() is None and meter.settings.mask == 0
    host = Host(c)
    assert not error_of(host.login(roles.OPERATOR))
    answers = {}
    for name, payload in CHANGES:
        a = host.request(roles.CODES[name], payload)
        assert not error_of(a), (name, parse_error(a.payload))
        answers[name] = json.loads(a.payload)
    t_set = answers["set_time"]["at_t"]
    assert answers["set_time"]["unix_s"] == UNIX and answers["set_time"]["rate_hz"] == RATE
    assert answers["set_interval"] == {"period_min": 5, "in_force": 1, "applies": "next boot"}
    assert answers["set_power_fail"]["enabled"] is False
    # live: calibration, checkpoint interval, power-fail handling, clock
    assert abs(meter.engine.calib["i_gain"] - 1.02) < 1e-6
    assert meter.cp_every == 120 * RATE
    assert meter.power_fail() == 0  # warnings ignored while disabled
    meter.run_samples(RATE * 3)
    assert meter.clock() == UNIX + (meter.engine.t - t_set) // RATE
    st = meter.status()["settings"]
    assert st["pending_until_boot"] == ["profile_min"] and st["retention_days"] == 365
    ev = console_events(meter)
    for text in EVENTS:
        assert text in ev, (text, ev)
    # reboot: a new Meter on the same board reads the blob back
    meter.stop()
    again = Meter(meter.board)
    s = again.settings
    assert s.note is None
    got = (s.checkpoint_s, s.profile_min, s.retention_days, s.power_fail, s.hold_up_ms)
    assert got == (120, 5, 365, False, 35)
    assert again.engine.profile_min == 5 and again.cp_every == 120 * RATE
    calib = again.engine.calib
    assert abs(calib["i_gain"] - 1.02) < 1e-6 and abs(calib["phase_deg"] - 0.5) < 1e-6
    assert again.power_fail_wired is False
    assert s.time_base() == {"unix_s": UNIX, "at_t": t_set, "rate_hz": RATE}
    assert again.clock() == UNIX + (again.engine.t - t_set) // RATE  # engine time restored: the clock goes on
    st = again.status()
    assert st["settings"]["pending_until_boot"] == [] and st["last_checkpoint"] is None
    again.checkpoint()
    assert again.status()["last_checkpoint"]["seq"] == again.journal.last_seq


def test_reader_refused_and_bad_values_change_nothing():
    meter, h, c, resets = production()
    host = Host(c)
    assert not error_of(host.login(roles.READER))
    for name, payload in CHANGES:
        assert error_of(host.request(roles.CODES[name], payload)) == ERR_FORBIDDEN, name
    assert _blob(meter) is None and meter.settings.mask == 0
    assert not error_of(host.login(roles.OPERATOR))
    assert not error_of(host.request(roles.CODES["set_retention"], b'{"days": 30}'))
    before = _blob(meter)
    calib = dict(meter.engine.calib)
    for name, payload in BAD:
        a = host.request(roles.CODES[name], payload)
        assert error_of(a) == ERR_BAD_PAYLOAD, (name, payload, a)
        assert parse_error(a.payload)[2], "a clear reason"
    assert _blob(meter) == before and meter.settings.retention_days == 30
    assert meter.engine.calib == calib and meter.cp_every == 10 * RATE and meter.clock() is None
    ev = console_events(meter)
    assert "operator set_retention 30" in ev
    assert not any(e.startswith("reader set_") for e in ev)
    assert any(e.startswith("operator set_retention refused: days must be 0..7300") for e in ev), ev
    assert "operator set_retention refused: a JSON object" in ev  # malformed requests are logged too
    assert sum(1 for e in ev if " refused: " in e) == len(BAD)
    assert sum(1 for e in ev if e.startswith("operator set_retention 30")) == 1


def test_damaged_blob_gives_defaults_and_meters_on():
    meter, h, c, resets = production()
    host = Host(c)
    assert not error_of(host.login(roles.OPERATOR))
    assert not error_of(host.request(roles.CODES["set_checkpoint"], b'{"interval_s": 600}'))
    backend = meter.keystore.backend
    blob = bytearray(backend.load(settings.BLOB))
    blob[3] ^= 0x40
    backend.save(settings.BLOB, bytes(blob))
    meter.stop()
    again = Meter(meter.board)
    assert "damaged" in again.settings.note
    assert again.settings.checkpoint_s == 10 and again.cp_every == 10 * RATE  # the board's default
    stored = again.stored
    again.run_samples(RATE * 12)
    assert again.stored > stored and again.journal.last_seq > 0  # metering and storing go on
    st = again.status()["settings"]
    assert "damaged" in st["note"] and st["checkpoint_s"] == 10
    # the next change writes a good blob again
    h2, c2 = production_console(again)
    host = Host(c2)
    assert not error_of(host.login(roles.OPERATOR))
    assert not error_of(host.request(roles.CODES["set_retention"], b'{"days": 10}'))
    assert Meter(meter.board).settings.note is None


def production_console(meter):
    from umeter.console import mode
    from umeter.console.console import Console
    from umeter.console.handlers import Handlers, public_line

    h = Handlers(meter, meter.board, mode.Mode(mode.PRODUCTION, 1), reset=lambda: None)
    line = public_line("umeter 0.1.0", "SN1", "production")
    c = Console(meter.keystore.backend, h.table(), line, h.on_event)
    h.bind(c)
    return h, c


def test_retention_by_age_runs_after_a_checkpoint():
    from umeter import records
    from umeter.crypto.seal import Opener

    meter, h, c, resets = production()
    host = Host(c)
    assert not error_of(host.login(roles.OPERATOR))
    assert not error_of(host.request(roles.CODES["set_retention"], b'{"days": 1}'))
    for _ in range(150):  # a few sectors of records from the first simulated second
        meter.checkpoint()
    oldest = next(meter.journal.records())[0]
    snap = meter.engine.snapshot()
    snap[2] += 2 * 86400 * RATE  # two days later (engine time)
    meter.engine.restore(snap)
    meter.checkpoint()
    assert meter.retained >= 1
    assert next(meter.journal.records())[0] > oldest
    opener = Opener(meter.keystore)
    kinds = []
    for seq, rec in meter.journal.records():
        body = opener.open(seq, rec)
        if body is not None:
            kinds.append(body[0])
    assert records.REC_RETENTION in kinds
    assert meter.status()["settings"]["retention_by_age"] == "on"
    meter.stop()
    again = Meter(meter.board)
    assert again.tamper is None and again.verification["retention_seq"] > 0  # proven, not tamper


def _profiles(m):
    from umeter.crypto.seal import Opener
    from umeter import records
    from umeter.metering.engine import decode_profile
    opener = Opener(m.keystore)
    out = []
    for seq, rec in m.journal.records():
        typ, f = records.decode(opener.open(seq, rec))
        if typ == records.REC_PROFILE:
            out.append(decode_profile(f))
    return out


def test_profile_fields_of_the_board_are_what_is_stored():
    from app_boards import SampleBoard
    from mptest import tmpdir
    board = SampleBoard(tmpdir())
    board.PROFILE_FIELDS = 0  # energy only: no voltage, demand or saturation in the load profile
    m = Meter(board)
    m.run_samples(RATE * 65)
    assert m.status()["settings"]["in_force"]["profile_fields"] == 0
    p = _profiles(m)
    assert len(p) == 1 and p[0]["1.8.0"] > 0
    assert p[0]["32.5.0"] is None and p[0]["1.6.0"] is None, p[0]
    board = SampleBoard(tmpdir())
    board.PROFILE_FIELDS = 99  # not a mask: every field stored, and status says why
    m = Meter(board)
    m.run_samples(RATE * 65)
    st = m.status()["settings"]
    assert st["in_force"]["profile_fields"] == 7 and "PROFILE_FIELDS" in st["fault"]
    assert _profiles(m)[0]["32.5.0"] is not None
