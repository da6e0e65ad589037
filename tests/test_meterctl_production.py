"""meterctl against a production meter over the console protocol, chosen automatically (issue 12 item 6),
and the clean reboot `meterctl reset` (issue 11 item 5), on the virtual board.

- export over the console (reader key from the host key directory) gives the same verdict and the same
  records as the raw-REPL export of the same flash image and keystore booted as a development board;
  without a reader key the production meter is refused with one clear line;
- watch reads over the console and shows the mode ("production"; "development" on a development board);
- reset checkpoints first: the import register after the reboot is not below the one before, and the
  reboot left its records (development: the boot event of the new boot after the stop's checkpoint;
  production: the sealed `operator reboot` console event)."""
import json
import shutil
import time

import pytest

from meterctl import export as ex
from meterctl import production as prod
from meterctl.cli import CliError
from meterctl.console_client import ConsoleError
from meterctl.vboard import VirtualBoard
from test_production_vboard import meterctl, production_board


def export_json(capsys, *argv):
    status, out, err = meterctl(capsys, "export", *argv, "--format", "json")
    return status, (json.loads(out) if status == 0 else None), err


def test_production_export_watch_match_the_raw_repl_path(tmp_path, capsys):
    with production_board(tmp_path, capsys) as (vb, keys):
        port = vb.pty_path
        with prod.Console(port, keys.role_key("operator"), "operator") as c:
            c.call("set_checkpoint")  # a high-water mark for the export to check
        # No reader key: one clear line, exit 2 (the master key alone cannot open a console session).
        status, out, err = meterctl(capsys, "export", "--port", port, "--key", keys.file("master"),
                                    "--timeout", "1")
        assert status == 2 and out == "" and err.count("\n") == 1, err
        assert "console protocol" in err and "--role-key" in err and "reader" in err
        # The reader key from the host key directory; its master.key opens the records.
        status, doc, err = export_json(capsys, "--port", port, "--key-dir", keys.path, "--strict")
        assert status == 0, err
        assert doc["summary"]["high_water_marks_checked"] and doc["records"]
        # --role-key FILE + --key FILE is the same.
        status, doc2, err = export_json(capsys, "--port", port, "--key", keys.file("master"), "--role-key",
                                        keys.file("reader"))
        assert status == 0, err
        assert doc2["records"][:len(doc["records"])] == doc["records"]
        # the same verdicts and exit codes as the raw-REPL path: a rollback is tamper (3)
        status, out, err = meterctl(capsys, "export", "--port", port, "--key-dir", keys.path, "--min-seq",
                                    10 ** 9)
        assert status == 3 and out == "" and "TAMPER" in err, err

        status, out, err = meterctl(capsys, "watch", "--port", port, "--key-dir", keys.path, "--count", "1")
        assert status == 0 and err == "", err
        frames = out.splitlines()
        assert len(frames) == 1 and frames[0].startswith("umeter on %s" % port)
        fields = [" ".join(f.split()) for f in frames[0].split(" | ")]
        assert any(f.startswith("Mode production") for f in fields), fields
        assert any(f.startswith("Voltage 32.7.0 ") for f in fields) and "Store health ok" in fields
        status, out, err = meterctl(capsys, "watch", "--port", port, "--count", "1", "--timeout", "1")
        assert status == 2 and "--role-key" in err
        # deploy is for development boards: refused with the reason, nothing written
        status, out, err = meterctl(capsys, "deploy", "--board", "sim", "--port", port, "--timeout", "1")
        assert status == 2 and "production mode" in err and "ota push" in err, err
        board_dir = vb.board_dir
    # The same image and keystore, booted as a development board (the mode blob removed): the raw-REPL
    # export of it holds the console export's records and gives the same verdict.
    copy = tmp_path / "copy"
    shutil.copytree(board_dir, copy)
    (copy / "keys" / "mode.bin").unlink()
    with VirtualBoard(copy, heapsize="24M") as dev:
        assert dev.wait_ready() and not dev.production
        status, raw, err = export_json(capsys, "--port", dev.pty_path, "--key-dir", copy / "keys", "--strict")
        assert status == 0, err
        # a host key directory and a dev board: the raw REPL is chosen, the key dir's master key used
        status, raw2, err = export_json(capsys, "--port", dev.pty_path, "--key-dir", keys.path)
        assert status == 0, err
        status, out, err = meterctl(capsys, "export", "--port", dev.pty_path, "--key-dir", copy / "keys",
                                    "--min-seq", 10 ** 9)
        assert status == 3 and out == "" and "TAMPER" in err, err
        status, out, err = meterctl(capsys, "watch", "--port", dev.pty_path, "--count", "1")
        assert status == 0 and "| Mode development" in out, err
    n = len(doc2["records"])
    assert raw["records"][:n] == doc2["records"] and raw2["records"][:n] == doc2["records"]
    assert raw["summary"]["first_seq"] == doc["summary"]["first_seq"]


def test_development_reset_checkpoints_first(tmp_path, capsys):
    with VirtualBoard(tmp_path / "board", heapsize="24M") as vb:
        assert vb.wait_ready()
        deadline = time.monotonic() + 20
        while True:  # some energy on the register first
            status, out, err = meterctl(capsys, "status", "--port", vb.pty_path, "--json")
            assert status == 0, err
            if json.loads(out)["registers_wh"]["1.8.0"] > 0:
                break
            assert time.monotonic() < deadline
            time.sleep(0.2)
        boots = vb.boots
        status, out, err = meterctl(capsys, "reset", "--port", vb.pty_path)
        assert status == 0, err
        assert "the meter stops cleanly" in out and "back up (development)" in out, out
        before, after = (float(v) for v in out.split("1.8.0 ")[1].split(" Wh after")[0].split(" Wh before, "))
        assert after >= before > 0
        assert vb.boots == boots + 1
        keys_dir = vb.board_dir / "keys"
        status, doc, err = export_json(capsys, "--port", vb.pty_path, "--key-dir", keys_dir)
        assert status == 0, err
    rows = doc["records"]
    boot_rows = [i for i, r in enumerate(rows) if r.get("event") == "boot"]
    assert len(boot_rows) >= 2
    # the stop's checkpoint is the newest record before the new boot's event: it carries the registers
    last = rows[boot_rows[-1] - 1]
    assert last["type"] == "checkpoint" and last["1.8.0"] >= before - 1e-6
    assert last["1.8.0"] == after  # the new boot restored exactly what the stop checkpointed


def test_production_reset_uses_the_operator_reboot(tmp_path, capsys):
    """Needs the operator command `reboot` (0x26) in the firmware's console handlers."""
    with production_board(tmp_path, capsys) as (vb, keys):
        boots = vb.boots
        status, out, err = meterctl(capsys, "reset", "--port", vb.pty_path, "--role", "reader",
                                    "--key-dir", keys.path)
        assert status == 2 and "forbidden" in err, err  # reader may not reboot the meter
        assert vb.boots == boots
        status, out, err = meterctl(capsys, "reset", "--port", vb.pty_path, "--key-dir", keys.path)
        assert status == 0, err
        assert "answered reboot" in out and "back up (production)" in out, out
        before, after = (float(v) for v in out.split("1.8.0 ")[1].split(" Wh after")[0].split(" Wh before, "))
        assert after >= before > 0
        deadline = time.monotonic() + 10
        while vb.boots == boots:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        status, doc, err = export_json(capsys, "--port", vb.pty_path, "--key-dir", keys.path)
        assert status == 0, err
        texts = [r.get("text", "") for r in doc["records"] if r.get("event") == "console"]
        assert "operator reboot" in texts
        mkeys = ex.keys_from_file(keys.file("master"))
        assert mkeys.key_ids == doc["summary"]["key_ids"]


class RefusingConsole:
    """A console session whose firmware answers the reboot code with an error frame."""

    port = "/dev/fake"

    def __init__(self, code):
        self.code = code
        self.rebooted = False

    def call(self, command, payload=b"", secret=False):
        assert command == 0x26 and payload == b""
        raise ConsoleError(self.code, 0, "", "reboot")

    def rebooting(self):
        self.rebooted = True


@pytest.mark.parametrize("code", [6, 17])  # unknown_command (older console), unsupported (no handler)
def test_reboot_unsupported_says_so(code):
    c = RefusingConsole(code)
    with pytest.raises(CliError, match="does not support the reboot command") as e:
        prod.reboot(c)
    assert "/dev/fake" in str(e.value) and "nothing was done" in str(e.value) and not c.rebooted
    c = RefusingConsole(8)  # forbidden is not "unsupported": the device's own refusal goes through
    with pytest.raises(ConsoleError, match="forbidden"):
        prod.reboot(c)


def test_display_says_the_mode():
    from meterctl import display
    base = {"software": "umeter 0.1.0", "board": "sim", "t_s": 3, "windows": 2}
    dev = display.render(dict(base, mode="development"), "hdr")
    assert dev[0] == "hdr" and dev[2] == "  Mode development (REPL open)"
    prod_lines = display.render(dict(base, mode="production", key={"production_note": "accepted"}))
    assert prod_lines[1].startswith("  Mode production (REPL closed, console protocol only); key storage not")
    assert display.render(base)[1] == "  Mode unknown"
