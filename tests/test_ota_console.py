"""OTA over the production console (firmware/umeter/ota/CONSOLE_OTA.md).

- On the unix port, both lanes: tests/mpt_console_ota.py drives the device handlers (OtaCommands) frame by
  frame with bundles signed here: the good one installs into the inactive slot, a forged signature is
  refused before any payload byte is written, wrong offsets / excess bytes / a file not in the manifest
  are refused, an abort leaves the active slot untouched and the next push resumes.
- On CPython: meterctl's sender (ota_console) against a console stand-in that runs the same handlers: the
  chunking (frame sizes, the head's last frame, seeking to the resume point), a broken connection resumed,
  the device's refusal and a wrong role as clear errors.
- End to end: `meterctl ota push --key-dir` on a production virtual board (REPL closed) installs into the
  slot; the meter reboots into the trial boot and `meterctl id` shows the new software id.
"""
import json
import os
import subprocess

import pytest

import ota_cases as oc
from meterctl import ota_console, ota_push
from meterctl.cli import CliError
from meterctl.console_client import ConsoleError, ProtocolError
from mpplugin import TESTS, lane_binary, lanes, micropython_path
from umeter.console import framing
from umeter.console.console import CommandError
from umeter.console.handlers_ota import OtaCommands
from umeter.hal.keystore_file import FileBackend
from umeter.ota import bundle, slots, trust

PAD = 6000


@pytest.fixture(scope="module")
def ed():
    return oc.EdKey()


@pytest.fixture(scope="module")
def cases(tmp_path_factory, ed):
    d = tmp_path_factory.mktemp("console_ota_cases")
    v2_files = oc.app_files("2.0", pad=PAD)
    v2 = oc.make(v2_files, [ed], version="2.0", counter=2)
    head, payload = oc.split(v2)
    sig_at = len(head) - 10   # inside the Ed25519 signature (the last bytes of the head)
    forged = head[:sig_at] + bytes([head[sig_at] ^ 1]) + head[sig_at + 1:] + payload
    m = oc.manifest_for(oc.app_files("2.4"), version="2.4", counter=2)
    corrupt = b"".join(oc.app_files("2.4").values()).replace(b"app 2.4", b"app 6.6")
    b = {
        "v1": oc.make(oc.app_files("1.0", pad=PAD), [ed], version="1.0", counter=1),
        "v2": v2,
        "v3": oc.make(oc.app_files("3.0", pad=PAD), [ed], version="3.0", counter=2),
        "forged": forged,
        "longer": v2 + b"\x00",
        "extra_file": v2 + b"#extra.py\n",
        "corrupt_file": oc.assemble(m, oc.sigblock_for(m, [ed]), corrupt),
        "replay_v0": oc.make(oc.app_files("0.9"), [ed], version="0.9", counter=0),
        "expires": oc.make(oc.app_files("0.8"), [ed], version="0.8", counter=1, expires=oc.ISSUED + 1000),
    }
    oc.write_case_dir(str(d), b, oc.trust_json([ed]))
    return d


def run_scenario(lane, name, cases, tmp_path, timeout=60):
    env = dict(os.environ, MICROPYPATH=micropython_path(), MPT_TMPDIR=str(tmp_path), OTA_CASES=str(cases))
    proc = subprocess.run([lane_binary(lane), "-X", "heapsize=8M", str(TESTS / "mp_runner.py"),
                           "mpt_console_ota", name], capture_output=True, text=True, env=env,
                          cwd=str(tmp_path), timeout=timeout * (3 if lane == "mp32" else 1))
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "MPT-PASS" in out, out[-6000:]
    return out


@pytest.mark.parametrize("lane", lanes())
def test_device_installs_and_refuses(lane, cases, tmp_path):
    out = run_scenario(lane, "scenario_install_and_refusals", cases, tmp_path)
    print([line for line in out.splitlines() if line.startswith("console ota")])


@pytest.mark.parametrize("lane", lanes())
def test_device_abort_keeps_the_active_slot_and_resumes(lane, cases, tmp_path):
    out = run_scenario(lane, "scenario_abort_keeps_the_active_slot_then_resumes", cases, tmp_path)
    print([line for line in out.splitlines() if line.startswith("console ota")])


# --- the host's sender against the device handlers (CPython) ------------------------------------------
class FakeConsole:
    """What ota_console needs of production.Console (call, rebooting, a context manager), answering
    through the device's own OtaCommands; records the frames; `lose_at` breaks the line at that call."""

    def __init__(self, ota, frames, lose_at=None):
        self.ota = ota
        self.frames = frames
        self.lose_at = lose_at
        self.lost = ProtocolError("no answer from the device within 1.0 s")
        self.rebooted = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def call(self, command, payload=b""):
        self.frames.append((command, bytes(payload)))
        if len(payload) > framing.MAX_PAYLOAD:
            raise ConsoleError(framing.ERR_TOO_LONG, 0, "", command)
        if self.lose_at is not None and len(self.frames) == self.lose_at:
            raise self.lost
        try:
            return getattr(self.ota, command)(payload)
        except CommandError as e:
            raise ConsoleError(e.code, e.arg, e.text, command) from None

    def rebooting(self):
        self.rebooted = True


@pytest.fixture
def device(tmp_path, monkeypatch, ed):
    monkeypatch.chdir(tmp_path)
    backend = FileBackend("ota")
    trust.provision(backend, oc.BOARD, oc.ARCH, [(ed.alg, ed.public)], bundle.POLICY_ED25519,
                    bundle.POLICY_ED25519)
    return OtaCommands(None, None, root="", backend=backend), backend


@pytest.mark.parametrize("lost", ["no answer", "port error"])
def test_sender_chunks_seeks_and_resumes(device, cases, lost):
    import serial
    ota, backend = device
    data = (cases / "v1.bnd").read_bytes()
    head, payload = ota_push.split(data)
    frames, consoles, seen = [], [], []

    def open_console():
        # the first session breaks at its 6th frame (3 payload frames were acknowledged), the second
        # goes through
        consoles.append(FakeConsole(ota, frames, lose_at=6 if not consoles else None))
        if lost == "port error":
            consoles[-1].lost = serial.SerialException("device reports readiness to read, returned no data")
        return consoles[-1]

    result, sessions, starts = ota_console.push(open_console, data, progress=lambda p, t: seen.append((p, t)),
                                                pause=0)
    assert sessions == 2 and result["slot"] == "a" and consoles[-1].rebooted and not consoles[0].rebooted
    assert result["software_id"] == bundle.software_id(oc.parts(data)[0])
    assert ota.reboot_wanted() and slots.load(backend).active == 0 and slots.load(backend).trial
    # every frame within the protocol's payload limit; the head's last frame ends at the head's end;
    # the second session skipped what the slot already held
    assert all(len(p) <= framing.MAX_PAYLOAD for _, p in frames)
    datas = [(int.from_bytes(p[:4], "big"), len(p) - 4) for c, p in frames if c == "ota_data"]
    heads = [i for i, d in enumerate(datas) if d == (14, len(head) - 14)]  # the head is under one chunk
    assert heads == [0, 5], datas   # 3 acknowledged payload frames and the lost one between
    assert starts == [0, 3 * ota_console.CHUNK], starts
    assert datas[6][0] == len(head) + 3 * ota_console.CHUNK, datas
    assert max(n for _, n in datas) == ota_console.CHUNK
    assert seen[-1] == (len(payload), len(payload))
    assert [c for c, _ in frames].count("ota_begin") == 2 and frames[-1][0] == "ota_finish"


def test_sender_reports_refusals_and_the_wrong_role(device, cases):
    ota, backend = device
    forged = (cases / "forged.bnd").read_bytes()
    with pytest.raises(ota_push.Refused, match="the device refused the bundle: signature by ed25519 key"):
        ota_console.push(lambda: FakeConsole(ota, []), forged, pause=0)
    assert slots.load(backend).active is None and not os.path.exists("slot_a")

    class Reader(FakeConsole):
        def call(self, command, payload=b""):
            raise ConsoleError(framing.ERR_FORBIDDEN, 0, command, command)

    with pytest.raises(CliError, match="ota push needs the admin role"):
        ota_console.push(lambda: Reader(ota, []), forged, pause=0)
    # a login that never gets an answer is not retried (nothing to resume)
    opened = []

    def silent():
        opened.append(1)
        raise ProtocolError("no answer from the device to auth_begin within 1.0 s")

    with pytest.raises(ProtocolError):
        ota_console.push(silent, forged, pause=0)
    assert opened == [1]
    with pytest.raises(CliError, match="not an umeter bundle"):
        ota_console.push(lambda: FakeConsole(ota, []), b"garbage" * 4, pause=0)


# --- end to end: a production virtual board --------------------------------------------------------------
def meterctl(capsys, *argv):
    from meterctl.cli import main as meterctl_main
    status = meterctl_main([str(a) for a in argv])
    out = capsys.readouterr()
    return status, out.out, out.err


def test_ota_push_to_a_production_board(tmp_path, capsys, ed, monkeypatch):
    """`meterctl ota push` picks the console protocol on a production board (REPL closed): a reader is
    refused, a bundle for another board is refused with the device's reason, the signed whole app
    installs into slot a as admin across a power cut (resumed), the meter reboots into it (trial boot)
    and identifies it."""
    import time

    from meterctl import production as prod
    from meterctl import signing_keys
    from meterctl.bench_ota_install import app_files
    from meterctl.vboard import VirtualBoard
    from test_provision import PRODUCTION_BOARD

    bd = tmp_path / "board"
    bd.mkdir()
    (bd / "board.py").write_text(PRODUCTION_BOARD)
    kd = tmp_path / "keys"
    pub = tmp_path / "release.pub"
    pub.write_bytes(signing_keys.public_file_bytes(ed.alg, ed.public))
    files = app_files()
    files["board.py"] = PRODUCTION_BOARD.encode()   # the slot's board module, as the board dir has it
    good = tmp_path / "v9.bnd"
    good.write_bytes(oc.make(files, [ed], version="9.1-console", counter=1))
    other = tmp_path / "other.bnd"
    other.write_bytes(oc.make(oc.app_files("9.2"), [ed], version="9.2", counter=1, boards=("esp32_devkitc",)))
    sid = bundle.software_id(oc.parts(good.read_bytes())[0])
    with VirtualBoard(bd, heapsize="24M") as vb:
        assert vb.wait_ready()
        status, out, err = meterctl(capsys, "ota", "trust", "--port", vb.pty_path, "--board", "sim", "--arch",
                                    "py", "--pubkey", pub, "--policy", "ed25519")
        assert status == 0, err
        status, out, err = meterctl(capsys, "provision", "--port", vb.pty_path, "--key-dir", kd,
                                    "--production", "--accept-unprotected-keys")
        assert status == 0, err
        assert prod.wait_for_console(vb.pty_path) == "production"
        push = ("ota", "push", "--port", vb.pty_path)
        status, out, err = meterctl(capsys, *push, "--timeout", "2", good)
        assert status == 2 and "console protocol" in err and "admin" in err, err
        status, out, err = meterctl(capsys, *push, "--key-dir", kd, "--role", "reader", good)
        assert status == 2 and "ota push needs the admin role" in err, err
        status, out, err = meterctl(capsys, *push, "--key-dir", kd, other)
        assert status == 2 and "refused the bundle: bundle is for board(s) esp32_devkitc" in err, err
        payload_len = len(oc.split(good.read_bytes())[1])
        real_push, cut = ota_console.push, []

        def push_with_a_power_cut(open_console, data, **kw):
            def hook(console, pos):
                if not cut and pos > payload_len // 3:
                    cut.append(pos)
                    vb.power_cut()   # the meter dies mid-upload and boots again (from its old app)
            return real_push(open_console, data, hook=hook, **kw)

        monkeypatch.setattr(ota_console, "push", push_with_a_power_cut)
        boots = vb.boots
        t0 = time.monotonic()
        status, out, err = meterctl(capsys, *push, "--key-dir", kd, good)
        took = time.monotonic() - t0
        assert status == 0 and "100%" in err and sid in out and "slot a" in out, out + err
        resumed = int(out.split("resumed at payload byte ")[1].split(")")[0])
        assert "(2 sessions" in out and 0 < resumed <= cut[0], (out, cut)
        deadline = time.monotonic() + 30
        while vb.boots < boots + 2:   # the cut, then the reboot into the trial boot
            assert time.monotonic() < deadline, "the meter did not reboot after ota_finish"
            time.sleep(0.2)
        assert prod.wait_for_console(vb.pty_path) == "production"
        status, out, err = meterctl(capsys, "id", "--port", vb.pty_path, "--key-dir", kd, "--json")
        assert status == 0, err
        info = json.loads(out)
        assert (info["slot"], info["version"], info["software_id"]) == ("a", "9.1-console", sid), info
        assert info["console_mode"] == "production"
    print("console ota push: %d bytes in %.1f s (%.1f KB/s)" % (good.stat().st_size, took,
                                                             good.stat().st_size / took / 1024))
