"""`meterctl provision` against the virtual board over its pty.

The sim board provisions its own *development* key at first start (boards/sim/board.py), so on it
provisioning is always refused, which is tested as such. To test real provisioning, the board directory
gets a board.py (as `meterctl deploy` would install one) that is the sim board with the production key
policy: the same module, but keystore() without the development key. The firmware's main.py then boots
a meter that refuses to store records until a key is provisioned; after provisioning and a reset it seals
records that `meterctl export --port` verifies with the key file."""
import base64
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from meterctl import export as ex
from meterctl.cli import main as meterctl_main
from meterctl.vboard import VirtualBoard

BIN = Path(sys.executable).parent
METERCTL = str(BIN / "meterctl")
MPREMOTE = str(BIN / "mpremote")

PRODUCTION_BOARD = """\
# The sim board with the production key policy: no development key (tests/test_provision.py).
import sys
for _d in sys.path:
    if _d.startswith('/.host'):
        try:
            _src = open(_d + '/board.py').read()
        except OSError:
            continue
        exec(_src)
        break
DEVELOPMENT_KEY = False


def keystore():
    from umeter.hal.keystore_file import open_keystore
    return open_keystore(keys_dir())
"""


def new_key(path):
    proc = subprocess.run([METERCTL, "keys", "new", "--out", str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return path.read_bytes()


def no_key_material(text, key):
    for form in (key.hex(), key.hex().upper(), repr(key), base64.b64encode(key).decode(), key.hex()[:16]):
        assert form not in text


def meterctl(capsys, key, *argv):
    status = meterctl_main([str(a) for a in argv])
    out = capsys.readouterr()
    no_key_material(out.out + out.err, key)
    return status, out.out, out.err


def device_status(vb):
    proc = subprocess.run([MPREMOTE, "connect", vb.pty_path, "resume", "exec",
                           "import json; print(json.dumps(meter.status()))"],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_provision_then_the_meter_seals_records_export_verifies(tmp_path, capsys):
    key_file = tmp_path / "meter.key"
    key = new_key(key_file)
    key_id = ex.keys_from_file(key_file).key_ids[0]
    bd = tmp_path / "board"
    bd.mkdir()
    (bd / "board.py").write_text(PRODUCTION_BOARD)
    with VirtualBoard(bd, heapsize="24M") as vb:
        assert vb.wait_ready()
        st = device_status(vb)
        assert st["key"] == {"provisioned": False} and "no device key" in st["refusal"]
        assert not (bd / "keys" / "keys.bin").exists()

        status, out, err = meterctl(capsys, key, "provision", "--port", vb.pty_path, "--key", key_file)
        assert status == 0, err
        assert out.strip() == "provisioned key id %s, key epoch 1 on %s" % (key_id, vb.pty_path)
        # In the board's internal storage now, under the key file's id.
        assert ex.keys_from_dir(bd / "keys").key_ids == [key_id]

        # A second provisioning is refused and changes nothing.
        before = (bd / "keys" / "keys.bin").read_bytes()
        other_file = tmp_path / "other.key"
        other = new_key(other_file)
        status, out, err = meterctl(capsys, other, "provision", "--port", vb.pty_path, "--key", other_file)
        assert status == 3 and out == "" and err.count("\n") == 1
        assert "already has a key, key id %s" % key_id in err and "nothing changed" in err
        assert (bd / "keys" / "keys.bin").read_bytes() == before
        no_key_material(err, key)

        vb.restart()  # the meter reads its key at boot
        assert vb.wait_ready()
        deadline = time.monotonic() + 20
        while device_status(vb)["records_stored"] < 1:
            assert time.monotonic() < deadline, "the provisioned meter stores no records"
            time.sleep(0.2)
        st = device_status(vb)
        assert st["refusal"] is None and st["key"]["key_id"] == key_id and st["key"]["development"] is False

        status, out, err = meterctl(capsys, key, "export", "--port", vb.pty_path, "--key", key_file,
                                    "--format", "json")
        assert status == 0, err
        recs = json.loads(out)["records"]
        assert recs[0]["type"] == "event" and recs[0]["event"] == "boot" and recs[0]["seq"] == 1
        # And another key opens none of it.
        status, out, err = meterctl(capsys, other, "export", "--port", vb.pty_path, "--key", other_file)
        assert status == ex.EXIT_WRONG_KEY and out == ""


def test_the_virtual_boards_development_key_is_never_replaced(tmp_path, capsys):
    key_file = tmp_path / "meter.key"
    key = new_key(key_file)
    bd = tmp_path / "board"
    with VirtualBoard(bd, heapsize="24M") as vb:
        assert vb.wait_ready()
        dev_id = ex.keys_from_dir(bd / "keys").key_ids[0]
        before = (bd / "keys" / "keys.bin").read_bytes()
        status, out, err = meterctl(capsys, key, "provision", "--port", vb.pty_path, "--key", key_file)
    assert status == 3 and out == "" and err.count("\n") == 1
    assert "already has a development key, key id %s" % dev_id in err
    assert (bd / "keys" / "keys.bin").read_bytes() == before


def test_bad_input(tmp_path, capsys):
    key_file = tmp_path / "meter.key"
    key = new_key(key_file)
    master, slave = os.openpty()  # nobody answers on it
    try:
        cases = [
            (["--port", "/dev/umeter-no-such-port", "--key", key_file], "does not exist"),
            (["--port", os.ttyname(slave), "--key", key_file, "--timeout", "1"], "not answering"),
            (["--port", os.ttyname(slave), "--key", tmp_path / "missing.key"], "cannot read key file"),
            (["--port", os.ttyname(slave), "--key", key_file, "--epoch", "0"], "--epoch"),
        ]
        for argv, why in cases:
            status, out, err = meterctl(capsys, key, "provision", *argv)
            assert status == 2 and out == "" and err.count("\n") == 1 and why in err, (argv, err)
    finally:
        os.close(master)
        os.close(slave)
    with pytest.raises(SystemExit):
        meterctl_main(["provision", "--key", str(key_file)])  # --port is required
    capsys.readouterr()


def test_a_device_without_board_py_is_a_clear_error(tmp_path, capsys):
    key_file = tmp_path / "meter.key"
    key = new_key(key_file)
    main = tmp_path / "idle_main.py"
    main.write_text("print('idle board')\n")
    # A bare board: its own (empty) directory, no board.py in it and none on its path.
    with VirtualBoard(tmp_path / "bare", main=main, board="no_such_board", heapsize="4M") as vb:
        assert vb.wait_ready()
        status, out, err = meterctl(capsys, key, "provision", "--port", vb.pty_path, "--key", key_file)
    assert status == 2 and out == "" and err.count("\n") == 1
    assert "ImportError" in err and "board" in err
