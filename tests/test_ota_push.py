"""`meterctl ota push` and `meterctl id` over the virtual board's pty: a bundle carrying the real OTA
modules and a stand-in app is pushed with a power cut and a dropped connection on the way (both resumed),
the boot stage verifies and starts it in trial mode, the app confirms, and `meterctl id` shows the
version, the security counter and the same software id as the bundle."""
import json
import sys
import time

import pytest

import ota_cases as oc
from meterctl import ota_push, signing_keys
from meterctl.cli import main as meterctl_main
from meterctl.remote import Remote
from meterctl.vboard import ROOT, VirtualBoard
from umeter.ota import bundle

FIRMWARE = ROOT / "firmware"
OTA_MODULES = ["umeter/ota/__init__.py", "umeter/ota/bundle.py", "umeter/ota/install.py",
               "umeter/ota/slots.py", "umeter/ota/running.py", "umeter/ota/trust.py", "umeter/ota/verify.py",
               "umeter/ota/http.py",
               "umeter/crypto/__init__.py", "umeter/crypto/ed25519.py", "umeter/crypto/sha512.py",
               "umeter/crypto/lms.py", "umeter/hal/__init__.py", "umeter/hal/keystore.py",
               "umeter/hal/keystore_file.py"]


def app_with_ota(version):
    files = oc.app_files(version, pad=20000)
    for rel in OTA_MODULES:
        files[rel] = (FIRMWARE / rel).read_bytes()
    return files


@pytest.fixture
def board(tmp_path):
    d = tmp_path / "board"
    d.mkdir()
    (d / "main.py").write_text("print('bare board')\n")
    with VirtualBoard(d, heapsize="8M") as vb:
        assert vb.wait_ready()
        yield vb


def meterctl(capsys, *args):
    code = meterctl_main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_push_resumes_after_power_cut_and_broken_connection(board, capsys):
    key = oc.EdKey()
    v1 = oc.make(app_with_ota("1.0"), [key], version="1.0", counter=1)
    pub = board.board_dir.parent / "release.pub"
    pub.write_bytes(signing_keys.public_file_bytes(key.alg, key.public))
    trust_args = ["ota", "trust", "--port", board.pty_path, "--board", "sim", "--arch", "py", "--pubkey", pub,
                  "--policy", "ed25519"]
    code, out, err = meterctl(capsys, *trust_args)
    assert code == 0 and "policy ed25519 (floor ed25519), keys ed25519 %s" % key.kid.hex() in out, out + err
    code, out, err = meterctl(capsys, *trust_args)
    assert code == 2 and "already provisioned" in err, err
    _, payload = ota_push.split(v1)
    broke = []

    def hook(dev, pos):
        if not broke and pos > len(payload) // 3:
            broke.append("cut")
            board.power_cut()          # the firmware dies mid-upload and boots again
        elif len(broke) == 1 and pos > 2 * len(payload) // 3:
            broke.append("drop")
            dev.close()                # the host side loses the port
    sid, sessions, resumed = ota_push.push(board.pty_path, v1, timeout=5, hook=hook)
    assert broke == ["cut", "drop"] and sessions == 3, (broke, sessions)
    assert resumed[0] == 0 and 0 < resumed[1] < resumed[2] < len(payload), resumed
    manifest = oc.parts(v1)[0]
    assert sid == bundle.software_id(manifest)

    # Power-on with the real boot stage (no board main.py: firmware/main.py runs): slot a, trial.
    (board.board_dir / "main.py").unlink()
    board.restart()
    assert board.wait_ready(15)
    code, out, err = meterctl(capsys, "id", "--port", board.pty_path, "--json")
    assert code == 0, err
    info = json.loads(out)
    assert info["mode"] == "slot" and info["slot"] == "a" and info["version"] == "1.0" and info["trial"]
    assert info["software_id"] == sid and info["security_counter"] == 0
    with Remote(board.pty_path) as dev:
        assert dev.exec("print(meter)").strip() == "app 1.0 on sim"
        assert dev.exec("from umeter.ota import slots\nprint(slots.confirm())").strip() == "True"
    code, out, err = meterctl(capsys, "id", "--port", board.pty_path)
    assert code == 0 and "software id    %s" % sid in out and "security ctr   1" in out, out + err
    assert "update policy  ed25519 (floor ed25519)" in out

    # The CLI: a second version with the progress bar; a refused one says why and changes nothing.
    v2 = board.board_dir.parent / "v2.bnd"
    v2.write_bytes(oc.make(app_with_ota("2.0"), [key], version="2.0", counter=1))
    code, out, err = meterctl(capsys, "ota", "push", "--port", board.pty_path, v2)
    assert code == 0 and "software id" in out and "100%" in err, out + err
    bad = board.board_dir.parent / "bad.bnd"
    bad.write_bytes(oc.make(app_with_ota("0.9"), [key], version="0.9", counter=0))
    code, out, err = meterctl(capsys, "ota", "push", "--port", board.pty_path, bad)
    assert code == 2 and "the device refused the bundle: security counter 0 below the installed 1" in err, err
    board.restart()
    assert board.wait_ready(15)
    code, out, err = meterctl(capsys, "id", "--port", board.pty_path, "--json")
    assert json.loads(out)["version"] == "2.0" and json.loads(out)["slot"] == "b", out + err


if __name__ == "__main__":
    sys.exit(pytest.main([__file__]))


def test_the_real_app_runs_from_a_verified_slot(tmp_path, capsys):
    """The whole firmware (sources, sim board.py) as a signed bundle: pushed, booted by the boot stage from
    slot a (its directory first on sys.path), metering, identified; the app confirms the trial itself once
    healthy (SLOTS.md section 6) and seals the queued update events into its journal."""
    from meterctl.bench_ota_install import app_files

    d = tmp_path / "board"
    d.mkdir()
    (d / "main.py").write_text("print('bare board')\n")
    key = oc.EdKey()
    data = oc.make(app_files(), [key], version="0.1.0-signed", counter=1)
    with VirtualBoard(d, heapsize="24M", env={"UMETER_SIM_SPEED": "20"}) as vb:
        assert vb.wait_ready()
        with Remote(vb.pty_path) as dev:
            dev.exec("from umeter.ota import trust, slots\n"
                     "trust.provision(slots.default_backend(), 'sim', 'py', [(1, bytes.fromhex(%r))], 1, 1)\n"
                     % key.public.hex())
        sid, _, _ = ota_push.push(vb.pty_path, data, timeout=10)
        (d / "main.py").unlink()
        vb.restart()
        assert vb.wait_ready(20)
        deadline = time.monotonic() + 60
        while True:
            code, out, err = meterctl(capsys, "status", "--port", vb.pty_path, "--json")
            # healthy = windows computed and a record sealed after them (the first checkpoint): the app
            # then ends its trial itself
            if code == 0 and json.loads(out)["windows"] >= 2 and not json.loads(out)["software_id"]["trial"]:
                break
            assert time.monotonic() < deadline, out + err
            time.sleep(0.5)
        with Remote(vb.pty_path) as dev:
            assert dev.exec("import umeter.app\nprint(umeter.app.__file__)").strip() == "slot_a/umeter/app.py"
            # already confirmed by the app: a second confirmation has nothing to do
            assert dev.exec("from umeter.ota import slots\nprint(slots.confirm())").strip() == "False"
            events = dev.exec("from umeter.ota import slots\nprint(len(slots.pending_events()))").strip()
            assert events == "0", events  # every queued update event is sealed, then acknowledged
            st = json.loads(dev.exec("import json, umeter.app as a\nprint(json.dumps(a.status()))"))
            assert st["software_id"]["software_id"] == sid and not st["software_id"]["trial"], st
        code, out, err = meterctl(capsys, "id", "--port", vb.pty_path, "--json")
        info = json.loads(out)
        got = (info["slot"], info["version"], info["software_id"], info["trial"])
        assert got == ("a", "0.1.0-signed", sid, False), info
