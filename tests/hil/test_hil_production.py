"""Production mode (issue 12) on the board under test: the REPL is closed for good (mpremote, meterctl's
raw REPL, Ctrl-C / raw / paste mode reach no Python) while the meter keeps metering; the console answers
by role (reader: status, registers, software id, export; an operator or admin command refused; without a
key only the public hello line); status and software id come over the protocol; the export verifies
with the key directory's master key; power cuts never move a register backwards.

A real rig: `--production DIR` with the board already provisioned (`meterctl provision --port P --key-dir
DIR --production`); without it every test here skips. The virtual board: the suite provisions its own
production board for this module (conftest.prod_rig), so nothing skips. Nothing here changes a real
board's state beyond sealed console events: the refused commands are harmless even if they ran
(a calibration read, a checkpoint, a factory reset without its confirmation text)."""
import json

import pytest
import rig as hil
from meterctl import production as prod
from meterctl.console_client import ConsoleError
from meterctl.remote import Remote, RemoteError

PYTHON_SIGNS = (b"PWNED", b"PASTE", b"FRIEND", b">>>", b"raw REPL", b"Traceback", b"MicroPython")
CUTS = 2


def _hello(board):
    with prod.Console(board.port, None, timeout=board.timeout) as c:
        return c.client.hello()


def _export(board, out_file):
    """`meterctl export --port P --key-dir DIR --format json`: over the console as reader, every record
    verified with DIR/master.key and the device's high-water mark; the rows."""
    code, err = board.export(out_file)
    assert code == 0, err
    return hil.records_of(out_file), err


@pytest.mark.hil_needs("production")
def test_repl_is_closed_and_the_meter_keeps_metering(prod_rig):
    board = prod_rig
    boots = board.vboard.boots if board.virtual else None
    before = board.wait_windows(more=1)
    assert before["mode"] == "production" and before["refusal"] is None, before
    rc, out = hil.mpremote_exec(board.port, "print(6 * 7007)", timeout=4)
    assert rc != 0 and "42042" not in out, (rc, out)
    with pytest.raises(RemoteError):
        with Remote(board.port, timeout=2) as dev:       # meterctl's own raw-REPL path
            dev.exec("print(6 * 7007)")
    seen = hil.raw_repl_attempt(board.port)
    leaked = [sign for sign in PYTHON_SIGNS if sign in seen]
    assert not leaked, "the closed REPL answered %s: %r" % (leaked, seen[:200])
    after = board.wait_windows(more=1)
    assert after["t_s"] > before["t_s"] and after["windows"] > before["windows"], (before, after)
    assert after["faults"] == before["faults"] and after["tamper"] is None, after
    if board.virtual:
        assert board.vboard.boots == boots, "the attempts rebooted the board"
    code, out, err = hil.meterctl("status", "--port", board.port, "--timeout", 2)
    assert code == 2 and "console protocol" in err and "--role-key" in err, out + err


@pytest.mark.hil_needs("production")
def test_roles_reader_reads_and_is_refused_the_rest(prod_rig, tmp_path):
    board = prod_rig
    with board.console("reader") as c:
        st = c.json("status")
        regs = json.loads(c.call("registers"))
        sid = c.json("software_id")
        summary = json.loads(c.paged("export"))
        refused = {}
        for name, payload in (("calibration", b""), ("set_checkpoint", b""), ("factory_reset", b"x")):
            with pytest.raises(ConsoleError) as e:
                c.call(name, payload)
            refused[name] = e.value.name
        st2 = c.json("status")  # the session survives the refusals
    assert st["mode"] == "production" and st["console"]["session"] == "reader", st.get("console")
    assert regs["registers_mwh"]["1.8.0"] >= 0 and set(regs["registers_mwh"]) == set(st["registers_wh"])
    assert sid["console_mode"] == "production" and summary["records"] >= 1, (sid, summary)
    assert refused == {"calibration": "forbidden", "set_checkpoint": "forbidden",
                       "factory_reset": "forbidden"}, refused
    assert st2["windows"] >= st["windows"]
    with board.console("operator", timeout=board.timeout) as c:  # one role up: still no admin command
        with pytest.raises(ConsoleError, match="forbidden"):
            c.call("factory_reset", b"x")
    # every privileged command that ran is a sealed event naming its role; the refused ones did not run
    rows, _ = _export(board, tmp_path / "records.json")
    texts = [str(r.get("text", "")) for r in rows if r.get("event") == "console"]
    assert not any(t.startswith(("reader calibration", "reader set_checkpoint", "reader factory_reset",
                                 "operator factory_reset")) for t in texts), texts[-10:]


@pytest.mark.hil_needs("production")
def test_without_a_key_only_the_public_hello_line(prod_rig):
    board = prod_rig
    line = _hello(board)
    parts = line.split("|")
    assert len(parts) == 4 and parts[0] == "umeter" and parts[3] == "production", line
    for command in ("status", "registers", "software_id", "export", "calibration", "factory_reset"):
        err, payload = hil.unauthenticated(board.port, command)
        assert err == "not_authenticated" and payload == b"", (command, err, payload)
    keys = prod.KeyDir(board.key_dir)
    for name in ("master", "reader", "operator", "admin"):
        assert keys.key(name).hex() not in line
    # a wrong key is no key (one failure: within the free tries, no back-off; the next login resets it)
    with pytest.raises(ConsoleError, match="auth_failed"):
        with prod.Console(board.port, bytes(a ^ 0x5A for a in keys.key("reader")), "reader",
                          timeout=board.timeout):
            pass
    with board.console("reader") as c:
        assert c.json("status")["console"]["roles"]["reader"]["failures"] == 0


@pytest.mark.hil_needs("production")
def test_status_and_software_id_over_the_protocol(prod_rig):
    board = prod_rig
    st = board.status()                   # meterctl status --port P --key-dir DIR --json
    ident = board.identity()              # meterctl id --port P --key-dir DIR --json
    assert st["mode"] == "production" and st["board"] == board.board, st
    assert st["refusal"] is None and st["store_error"] is None and st["tamper"] is None, st
    assert st["key"]["provisioned"] and st["key"]["development"] is False, st["key"]
    assert ident["console_mode"] == "production", ident
    sw = st["software_id"]
    assert ident["mode"] == sw["mode"], (ident, sw)
    if board.software_id is not None:  # the virtual board: the signed app the suite installed
        assert ident["mode"] == "slot" and ident["software_id"] == board.software_id, ident
    if ident["mode"] == "slot":  # a verified app: the status and `id` name the same one
        keep = ("slot", "version", "software_id", "security_counter", "manifest_counter", "trial")
        assert {k: ident.get(k) for k in keep} == {k: sw.get(k) for k in keep}, (ident, sw)
        assert not ident["trial"] and ident["security_counter"] >= ident["manifest_counter"], ident
    else:                        # a development deploy
        assert ident["note"] == sw["note"] == "unverified development deploy", (ident, sw)
        assert ident["version"] == st["software"] and ident["software_id"] is None, (ident, st["software"])
    public = _hello(board).split("|")[1]  # the hello line names the running app (its SOFTWARE_ID)
    assert public == st["software"], (public, st["software"])
    code, out, err = hil.meterctl("id", "--port", board.port, *board.role_args)
    assert code == 0 and "umeter on %s" % board.port in out, out + err
    assert ("software id    %s" % ident["software_id"]) in out if ident["software_id"] else \
        "unverified development deploy" in out, out


@pytest.mark.hil_needs("production", "export_key")
def test_export_verifies_over_the_protocol(prod_rig, tmp_path):
    board = prod_rig
    board.wait_status(lambda s: s["records_stored"] >= 2, "records stored", timeout=30)
    rows, err = _export(board, tmp_path / "records.json")
    seqs = [r["seq"] for r in rows]
    assert seqs and seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    kinds = {r["type"] for r in rows}
    assert "checkpoint" in kinds and "event" in kinds, kinds
    assert any(r.get("event") == "boot" for r in rows), rows[:5]
    print("exported %d records over the console (seq %d..%d): %s"
          % (len(seqs), seqs[0], seqs[-1], err.strip().splitlines()[-1]))
    code, _, err = hil.meterctl("export", "--port", board.port, "--key", board.key_dir / "master.key",
                                "--format", "json", "--out", tmp_path / "no-role.json", "--timeout", 2)
    assert code == 2 and not (tmp_path / "no-role.json").exists(), err  # no role key: no console, no REPL


@pytest.mark.hil_needs("production", "power_cycle")
def test_registers_never_go_backwards_across_power_cuts_in_production(prod_rig, tmp_path):
    """As test_hil_powercuts, on the production console: what a checkpoint sealed (the high-water mark
    moved past it) survives every cut; with the power-fail warning nothing at all is lost."""
    board = prod_rig
    history = []
    for cut in range(CUTS):
        settled = board.wait_windows(more=1)
        # a checkpoint after `settled` (the mark moves): those registers are sealed now
        last = board.wait_status(lambda s: s["mark"].get("seq", 0) > settled["mark"].get("seq", 0),
                                 "a checkpoint after the reading", timeout=board.wall_s(600) + 30)
        board.power_cycle()
        after = board.wait_windows(more=1)
        lost = _backwards(settled, after)
        assert not lost, "cut %d: a checkpointed register went back (before, after): %s" % (cut + 1, lost)
        lost = _backwards(last, after)
        assert not (board.cut_warns and lost), "cut %d: energy lost despite the power-fail warning " \
                                               "(before, after): %s" % (cut + 1, lost)
        assert after["mode"] == "production" and after["tamper"] is None and after["store_error"] is None
        assert after["restored_from_seq"] > 0, "the boot restored no checkpoint: %s" % after
        history.append((last["registers_wh"]["1.8.0"], after["registers_wh"]["1.8.0"]))
    print("1.8.0 before / after each cut (Wh): %s" % ", ".join("%.4f / %.4f" % h for h in history))
    rows, _ = _export(board, tmp_path / "after-cuts.json")
    boots = sum(1 for r in rows if r.get("event") == "boot")
    assert boots >= CUTS + 1, "%d boot events for %d cuts" % (boots, CUTS)
    seen = hil.raw_repl_attempt(board.port, wait_s=0.5)
    assert not [sign for sign in PYTHON_SIGNS if sign in seen], "the REPL opened after the cuts: %r" % seen


def _backwards(before, after):
    regs0, regs1 = hil.registers(before), hil.registers(after)
    return {code: (regs0[code], regs1.get(code)) for code in regs0 if not regs1.get(code, -1) >= regs0[code]}
