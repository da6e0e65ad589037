"""Production mode end to end on the virtual board (issue 12): `meterctl provision --production` closes the
REPL for good (mpremote, raw REPL, Ctrl-C/D/E reach no Python) while the meter keeps metering; the console
answers by role; the three serial-port attacks of the issue fail; the back-off survives a reboot; a reset
to the original state reopens the REPL on an empty meter that can be provisioned again, above its old key
epochs. A development board keeps its REPL and says "development".

The board is the sim board with the production key policy (no development key: tests/test_provision.py).
Its key storage is host files, not MCU-internal: production needs --accept-unprotected-keys (tested)."""
import json
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
import serial

from meterctl import export as ex
from meterctl import production as prod
from meterctl.cli import main as meterctl_main
from meterctl.console_client import ConsoleError
from meterctl.vboard import VirtualBoard
from test_provision import PRODUCTION_BOARD

MPREMOTE = str(Path(sys.executable).parent / "mpremote")


def meterctl(capsys, *argv):
    status = meterctl_main([str(a) for a in argv])
    out = capsys.readouterr()
    return status, out.out, out.err


@contextmanager
def production_board(tmp_path, capsys):
    bd = tmp_path / "board"
    bd.mkdir()
    (bd / "board.py").write_text(PRODUCTION_BOARD)
    kd = tmp_path / "keys"
    with VirtualBoard(bd, heapsize="24M") as vb:
        assert vb.wait_ready()
        provision = ("provision", "--port", vb.pty_path, "--key-dir", kd, "--production")
        status, out, err = meterctl(capsys, *provision)
        assert status == 4 and "not MCU-internal" in err and "--accept-unprotected-keys" in err
        status, out, err = meterctl(capsys, *provision, "--accept-unprotected-keys")
        assert status == 0, err
        keys = prod.KeyDir(kd)
        for name in ("master", "reader", "operator", "admin"):
            assert (kd / ("%s.key" % name)).stat().st_mode & 0o777 == 0o600
            assert keys.key(name).hex() not in out + err
        assert "role admin key id %s" % keys.ids()["admin"] in out
        assert prod.wait_for_console(vb.pty_path) == "production"
        assert vb.production
        yield vb, keys


def status_as(vb, keys, role="reader"):
    with prod.Console(vb.pty_path, keys.role_key(role), role) as c:
        return c.json("status")


def export_checked(vb, keys):
    with prod.Console(vb.pty_path, keys.role_key("reader")) as c:
        snap = prod.read_snapshot(c, vb.pty_path)
    mkeys = ex.keys_from_file(keys.file("master"))
    res = ex.verify(snap, mkeys, marks=[snap.mark] if snap.mark else [])
    ex.verdict(res)  # raises ExportFailure on tamper
    return snap, res


def mpremote_exec(vb, code, timeout=4):
    try:
        p = subprocess.run([MPREMOTE, "connect", vb.pty_path, "resume", "exec", code], capture_output=True,
                           text=True, timeout=timeout)
        return p.returncode, p.stdout + p.stderr
    except subprocess.TimeoutExpired as e:
        return None, (e.stdout or b"").decode("utf-8", "replace") if isinstance(e.stdout, bytes) else ""


def test_lockdown_repl_closed_meter_meters(tmp_path, capsys):
    with production_board(tmp_path, capsys) as (vb, keys):
        before = status_as(vb, keys)
        assert before["mode"] == "production" and before["refusal"] is None
        assert before["key"]["protected"] is False and "accepted" in before["key"]["production_note"]
        rc, out = mpremote_exec(vb, "print(6 * 7007)")
        assert rc != 0 and "42042" not in out
        with serial.Serial(vb.pty_path, 115200, timeout=0.1) as s:
            # Ctrl-C, raw REPL (Ctrl-A), Ctrl-D, paste mode (Ctrl-E), a statement, friendly REPL (Ctrl-B)
            s.write(b"\r\x03\x03\x01print('PWN'+'ED')\x04\x05print('PA'+'STE')\x04\x02\r\nprint('FR'+'IEND')\r\n")
            time.sleep(1.0)
            seen = s.read(65536)
        for text in (b"PWNED", b"PASTE", b"FRIEND", b">>>", b"raw REPL", b"Traceback", b"MicroPython"):
            assert text not in seen
        time.sleep(1.0)
        after = status_as(vb, keys)
        assert after["t_s"] > before["t_s"] and after["windows"] > before["windows"]  # metering went on
        assert vb.boots == 2  # nothing rebooted it either
        status, out, err = meterctl(capsys, "status", "--port", vb.pty_path, "--key-dir", keys.path, "--json")
        assert status == 0, err
        assert json.loads(out)["mode"] == "production"
        status, out, err = meterctl(capsys, "status", "--port", vb.pty_path, "--timeout", "2")
        assert status == 2 and "console protocol" in err and "--role-key" in err


def test_roles_end_to_end(tmp_path, capsys):
    with production_board(tmp_path, capsys) as (vb, keys):
        change = json.dumps({"v_gain": 1.01}).encode()
        with prod.Console(vb.pty_path, keys.role_key("reader")) as c:
            with pytest.raises(ConsoleError, match="forbidden"):
                c.call("calibration", change)
            assert json.loads(c.call("registers"))["registers_mwh"]
        with prod.Console(vb.pty_path, keys.role_key("operator"), "operator") as c:
            assert json.loads(c.call("calibration", change))["v_gain"] == pytest.approx(1.01)
            for name, payload, secret in (("factory_reset", b"x", False), ("set_mode", b"development", False),
                                          ("set_role_key", bytes(33), True), ("provision", bytes(128), True)):
                with pytest.raises(ConsoleError, match="forbidden"):
                    c.call(name, payload, secret=secret)
        with prod.Console(vb.pty_path, keys.role_key("admin"), "admin") as c:
            with pytest.raises(ConsoleError, match="bad_payload"):
                c.call("factory_reset", b"yes")  # the confirmation text is required
        # every privileged command is a sealed event naming its role
        snap, res = export_checked(vb, keys)
        texts = [r.get("text", "") for r in res.rows if r.get("event") == "console"]
        assert "operator calibration v_gain=1.01" in texts and "admin factory_reset" in texts  # the change
        assert not any(t.startswith("reader calibration") for t in texts)
        status, out, err = meterctl(capsys, "id", "--port", vb.pty_path, "--key-dir", keys.path, "--json")
        assert status == 0, err
        assert json.loads(out)["console_mode"] == "production"


def test_reprovision_needs_the_admin_key(tmp_path, capsys):
    with production_board(tmp_path, capsys) as (vb, keys):
        epoch = status_as(vb, keys)["key"]["epoch"]
        other = prod.KeyDir(tmp_path / "other")
        other.create_missing()
        status, out, err = meterctl(capsys, "provision", "--port", vb.pty_path, "--key-dir", other.path,
                                    "--production", "--timeout", "3")
        assert status == 2 and "auth_failed" in err and "admin" in err
        status, out, err = meterctl(capsys, "provision", "--port", vb.pty_path, "--key-dir", keys.path,
                                    "--production")
        assert status == 0 and "as admin" in out, err
        assert int(out.split("key epoch ")[1].split()[0]) > epoch
        assert prod.wait_for_console(vb.pty_path) == "production"
        st = status_as(vb, keys)
        assert st["key"]["epoch"] > epoch and st["refusal"] is None


ATTACKS = {
    "read the master key": "import umeter.app as a\nprint(a.meter().keystore._keys[0][1].hex())",
    "reset the register": ("import umeter.app as a\nm = a.meter()\ns = list(m.engine.snapshot())\n"
                           "s[3] = 1 << s[1]\nm.engine.restore(tuple(s))\nm.checkpoint()\nprint('DONE')"),
    "clear the mark": "import umeter.app as a\na.meter().keystore.clear_mark()\nprint('DONE')",
}


def test_the_serial_port_attacks_fail(tmp_path, capsys):
    with production_board(tmp_path, capsys) as (vb, keys):
        with prod.Console(vb.pty_path, keys.role_key("operator"), "operator") as c:
            c.call("set_checkpoint")  # a mark to attack
        before = status_as(vb, keys)
        for name, code in ATTACKS.items():
            rc, out = mpremote_exec(vb, code)
            assert rc != 0 and "DONE" not in out, name
            assert keys.key("master").hex() not in out, name
        after = status_as(vb, keys)
        assert after["registers_wh"]["1.8.0"] >= before["registers_wh"]["1.8.0"]
        assert after["mark"]["seq"] >= before["mark"]["seq"] > 0
        snap, res = export_checked(vb, keys)
        assert snap.mark is not None and snap.mark.seq == after["mark"]["seq"]


def test_backoff_survives_a_reboot(tmp_path, capsys):
    with production_board(tmp_path, capsys) as (vb, keys):
        wrong = bytes(32)
        with serial.Serial(vb.pty_path, 115200, timeout=0.02) as s:
            from meterctl.console_client import ConsoleClient
            client = ConsoleClient(s.read, s.write, timeout=5)
            for i in range(4):
                with pytest.raises(ConsoleError, match="auth_failed") as e:
                    client.login("admin", wrong)
            assert e.value.arg == 1000  # the 4th failure: 1 s
        vb.restart()
        assert prod.wait_for_console(vb.pty_path) == "production"
        with pytest.raises(ConsoleError, match="backoff") as e:
            with prod.Console(vb.pty_path, keys.role_key("admin"), "admin"):
                pass
        assert 0 < e.value.arg <= 1000  # the stored delay starts again in full after the reboot
        time.sleep(e.value.arg / 1000.0 + 0.2)
        st = status_as(vb, keys, "admin")
        assert st["console"]["roles"]["admin"]["failures"] == 0 and st["console"]["session"] == "admin"
        _, res = export_checked(vb, keys)
        fails = [r for r in res.rows if r.get("event") == "console"
                 and str(r.get("text", "")).startswith("admin failures=")]
        assert len(fails) == 4


def test_reset_to_original_then_provision_again(tmp_path, capsys):
    with production_board(tmp_path, capsys) as (vb, keys):
        snap, res = export_checked(vb, keys)
        old_epoch = max(r["key_epoch"] for r in res.rows)
        assert res.rows and res.rows[0]["seq"] == 1
        with prod.Console(vb.pty_path, keys.role_key("admin"), "admin") as c:
            assert c.call("factory_reset", b"reset to original state") == b"resetting"
            c.rebooting()
        deadline = time.monotonic() + 30
        while vb.production or not vb.wait_ready(1):
            assert time.monotonic() < deadline, "the board did not come back in development mode"
            time.sleep(0.2)
        status, out, err = meterctl(capsys, "status", "--port", vb.pty_path, "--json")
        assert status == 0, err
        st = json.loads(out)
        assert st["mode"] == "development" and st["key"]["provisioned"] is False
        assert st["journal"]["records"] == 0
        kdir = vb.board_dir / "keys"
        assert not (kdir / "keys.bin").exists() and not (kdir / "rolekeys.bin").exists()
        assert (kdir / "rstnote.bin").exists() and (kdir / "authfail.bin").exists()
        status, out, err = meterctl(capsys, "provision", "--port", vb.pty_path, "--key-dir", keys.path,
                                    "--production", "--accept-unprotected-keys")
        assert status == 0, err
        epoch = int(out.split("key epoch ")[1].split()[0])
        assert epoch > old_epoch  # never epoch 1 again
        assert prod.wait_for_console(vb.pty_path) == "production"
        snap2, res2 = export_checked(vb, keys)
        assert res2.rows[0]["seq"] == 1 and min(r["key_epoch"] for r in res2.rows) > old_epoch
        assert status_as(vb, keys)["reset_note"]["resets"] == 1


def test_development_board_keeps_its_repl(tmp_path, capsys):
    with VirtualBoard(tmp_path / "board", heapsize="24M") as vb:
        assert vb.wait_ready() and not vb.production
        rc, out = mpremote_exec(vb, "print(6 * 7007)")
        assert rc == 0 and "42042" in out
        status, out, err = meterctl(capsys, "status", "--port", vb.pty_path, "--json")
        assert status == 0, err
        assert json.loads(out)["mode"] == "development"
