"""meterctl deploy / status / watch end to end on a virtual board through its pty, exactly as on a real
board's serial port: the board starts as a bare MicroPython (empty filesystem, no firmware on its import
path), `meterctl deploy` installs the firmware (files land in the board directory, verified by hash),
a restart boots the deployed main.py, and `meterctl status` / `watch` read the running meter.

A second board definition with ARCH "x64" (the unix port's native architecture) makes deploy compile
with mpy-cross, so the compiled path (.mpy with viper code, stale .py shadowing removal) runs for real."""
import hashlib
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from meterctl import deploy
from meterctl.vboard import ROOT, VirtualBoard

METERCTL = str(Path(sys.executable).with_name("meterctl"))
MPREMOTE = str(Path(sys.executable).with_name("mpremote"))
SCENARIO = {"vrms": 231.0, "irms": 7.5, "phase_deg": 30.0, "freq_hz": 50.0, "noise_lsb": 1, "seed": 3}
SOURCES = deploy.firmware_sources(deploy.FIRMWARE_DIR)


def meterctl(*args, timeout=120):
    return subprocess.run([METERCTL] + [str(a) for a in args], capture_output=True, text=True,
                          timeout=timeout)


def device_exec(board, code):
    proc = subprocess.run([MPREMOTE, "connect", board.pty_path, "resume", "exec", code], capture_output=True,
                          text=True, timeout=30)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout.strip()


def files(directory):
    return {p.relative_to(directory).as_posix(): p.read_bytes()
            for p in Path(directory).rglob("*") if p.is_file()}


@pytest.fixture
def board(tmp_path):
    """A bare virtual board: only host_tools (the simulators) on its import path, nothing on its fs."""
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "host_tools").symlink_to(ROOT / "host_tools")
    board_dir = tmp_path / "board"
    board_dir.mkdir()
    (board_dir / "scenario.json").write_text(json.dumps(SCENARIO))
    env = {"UMETER_SIM_SPEED": "20", "UMETER_SIM_SCENARIO_JSON": ""}   # 20x real time; scenario.json
    with VirtualBoard(board_dir, repo=repo, heapsize="24M", env=env) as vb:
        assert vb.wait_ready()
        yield vb


def restart(board):
    board.restart()
    assert board.wait_ready(15)


def wait_for_windows(board, n, timeout=60):
    deadline = time.monotonic() + timeout
    while True:
        r = meterctl("status", "--port", board.pty_path, "--json")
        if r.returncode == 0:
            status = json.loads(r.stdout)
            if status["windows"] >= n:
                return status
        assert time.monotonic() < deadline, "meter did not reach %d windows: %s%s" % (n, r.stdout, r.stderr)
        time.sleep(0.3)


def test_deploy_boot_status_watch(board):
    bd = board.board_dir
    assert not (bd / "main.py").exists()
    r = meterctl("deploy", "--board", "sim", "--port", board.pty_path)
    assert r.returncode == 0, r.stderr
    n = len(SOURCES) + 1
    assert "%d files, %d copied" % (n, n) in r.stdout and "all %d verified by SHA-256" % n in r.stdout
    assert "deploy: %d files, 0 unchanged" % n in r.stderr and "%d/%d /main.py" % (n, n) in r.stderr
    # The virtual board's filesystem is its directory: the sources (sim board: no compile) and board.py.
    for rel in SOURCES:
        assert (bd / rel).read_bytes() == (deploy.FIRMWARE_DIR / rel).read_bytes(), rel
    assert (bd / "board.py").read_bytes() == (ROOT / "boards" / "sim" / "board.py").read_bytes()
    assert not list(bd.rglob("*.part"))

    # Deployed but not booted yet: status says so, in one line.
    r = meterctl("status", "--port", board.pty_path)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.count("\n") == 1 and "the meter is not running on %s" % board.pty_path in r.stderr

    # A file damaged on the device and a torn upload are found by hash and repaired; the rest is kept.
    victim = bd / "umeter" / "records.py"
    victim.write_bytes(victim.read_bytes() + b"\n# damaged\n")
    (bd / "umeter" / "app.py.part").write_bytes(b"torn")
    r = meterctl("deploy", "--board", "sim", "--port", board.pty_path)
    assert r.returncode == 0, r.stderr
    assert "1 copied" in r.stdout and "%d unchanged" % (n - 1) in r.stdout
    assert "1 stale removed (/umeter/app.py.part)" in r.stdout
    assert victim.read_bytes() == (deploy.FIRMWARE_DIR / "umeter" / "records.py").read_bytes()
    assert not (bd / "umeter" / "app.py.part").exists()

    # Power-on: the deployed main.py boots the meter on the sim board (development key, scenario.json).
    restart(board)
    status = wait_for_windows(board, 5)
    win = status["window"]
    assert status["board"] == "sim" and status["key"]["development"] is True
    assert abs(win["32.7.0"] - SCENARIO["vrms"]) / SCENARIO["vrms"] < 0.005, win
    assert abs(win["31.7.0"] - SCENARIO["irms"]) / SCENARIO["irms"] < 0.005, win
    assert status["records_stored"] >= 1 and status["store_error"] is None and status["tamper"] is None
    assert status["registers_wh"]["1.8.0"] > 0

    r = meterctl("status", "--port", board.pty_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("umeter on %s\n" % board.pty_path) and "Voltage" in r.stdout

    r = meterctl("watch", "--port", board.pty_path, "--count", "2", "--interval", "0.2")
    assert r.returncode == 0 and r.stderr == "", r.stderr
    frames = r.stdout.splitlines()
    assert len(frames) == 2
    for frame in frames:
        assert frame.startswith("umeter on %s" % board.pty_path)
        fields = [" ".join(f.split()) for f in frame.split(" | ")]
        assert any(f.startswith("Voltage 32.7.0 23") and f.endswith(" V") for f in fields), frame
        assert any(f.startswith("Import active energy 1.8.0") for f in fields) and "Store health ok" in fields


    # Ctrl-C stops an endless watch cleanly, and the board still answers afterwards.
    proc = subprocess.Popen([METERCTL, "watch", "--port", board.pty_path, "--interval", "0.1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = proc.stdout.readline()
        assert first.startswith("umeter on %s" % board.pty_path), first
        time.sleep(0.35)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0 and err == "", err
    assert all(line.startswith("umeter on ") for line in out.splitlines())
    assert meterctl("status", "--port", board.pty_path, "--json").returncode == 0

    # A power cut under a running watch: the lost session is reported in a frame, then watch reconnects.
    proc = subprocess.Popen([METERCTL, "watch", "--port", board.pty_path, "--interval", "0.3", "--count", "8",
                             "--timeout", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert "Voltage" in proc.stdout.readline()
        board.power_cut()
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    frames = out.splitlines()
    assert proc.returncode == 0 and err == "" and len(frames) == 7, out + err
    lost = [f for f in frames if "no reading: " in f]
    assert lost and "lost contact with %s" % board.pty_path in lost[0], frames
    assert all(board.pty_path in f for f in lost), frames  # or no answer while the board boots
    assert "Voltage" in frames[-1]


def x64_board(tmp_path):
    """The sim board under another name with ARCH x64: deploy compiles for the host's unix port."""
    src = (ROOT / "boards" / "sim" / "board.py").read_text()
    text = src.replace('NAME = "sim"', 'NAME = "sim_x64"').replace("ARCH = None", 'ARCH = "x64"')
    assert text != src and 'ARCH = "x64"' in text
    (tmp_path / "boards" / "sim_x64").mkdir(parents=True)
    (tmp_path / "boards" / "sim_x64" / "board.py").write_text(text)
    return tmp_path / "boards"


def test_compiled_deploy_removes_shadowing_sources(board, tmp_path):
    bd = board.board_dir
    boards_dir = x64_board(tmp_path)
    assert meterctl("deploy", "--board", "sim", "--port", board.pty_path).returncode == 0
    (bd / "umeter" / "retired.py").write_text("X = 1\n")        # a module no longer in the firmware
    (bd / "lib").mkdir()
    (bd / "lib" / "user.py").write_text("Y = 2\n")              # not the deploy's: left alone
    (bd / "notes.txt").write_text("mine")
    r = meterctl("deploy", "--board", "sim_x64", "--boards-dir", boards_dir, "--port", board.pty_path)
    assert r.returncode == 0, r.stderr
    assert "mpy-cross -march=x64" in r.stdout and "%d stale removed" % len(SOURCES) in r.stdout
    on_board = files(bd)
    for rel in SOURCES:
        if rel.as_posix() == "main.py":
            assert on_board["main.py"] == (deploy.FIRMWARE_DIR / "main.py").read_bytes()
            continue
        # MicroPython imports X.py before X.mpy: no source may remain next to its .mpy.
        assert rel.as_posix() not in on_board, rel
        assert on_board[rel.with_suffix(".mpy").as_posix()][:1] == b"M", rel
    assert "umeter/retired.py" not in on_board
    assert on_board["lib/user.py"] == b"Y = 2\n" and on_board["notes.txt"] == b"mine"
    assert b'ARCH = "x64"' in on_board["board.py"]

    # The compiled firmware (viper kernels as x64 machine code) runs the meter after a power-on.
    restart(board)
    status = wait_for_windows(board, 3)
    assert status["board"] == "sim_x64" and status["faults"] == 0
    assert abs(status["window"]["32.7.0"] - SCENARIO["vrms"]) / SCENARIO["vrms"] < 0.005
    loaded = device_exec(board, "import umeter.app, umeter.metering.kernels as k; "
                                "print(umeter.app.__file__, k.__file__)")
    assert loaded.split() == ["umeter/app.mpy", "umeter/metering/kernels.mpy"], loaded

    # And back to sources: the .mpy files go, hashes still verified.
    r = meterctl("deploy", "--board", "sim_x64", "--boards-dir", boards_dir, "--port", board.pty_path,
                 "--no-compile")
    assert r.returncode == 0, r.stderr
    on_board = files(bd)
    assert not [p for p in on_board if p.endswith(".mpy")]
    for rel in SOURCES:
        assert hashlib.sha256(on_board[rel.as_posix()]).digest() == \
            hashlib.sha256((deploy.FIRMWARE_DIR / rel).read_bytes()).digest()


def fake_installed_slot(board_dir):
    """What an OTA install leaves on the device's filesystem (SLOTS.md): slot_a/ with its files, a trust
    entry and a boot state naming slot a active and pinned. The manifest is not a signed one: the boot
    stage refuses it, which is enough to show it is preferred over the deployed files."""
    from umeter.hal.keystore_file import FileBackend
    from umeter.ota import bundle, slots, trust

    (board_dir / "slot_a" / "umeter").mkdir(parents=True)
    (board_dir / "slot_a" / "MANIFEST").write_bytes(b"not a signed manifest")
    (board_dir / "slot_a" / "umeter" / "app.py").write_text("X = 1\n")
    backend = FileBackend(str(board_dir / "ota"))
    trust.provision(backend, "sim", "py", [(bundle.ALG_ED25519, bytes(range(32)))], 1, 1)
    st = slots.BootState()
    st.active, st.digests[0] = 0, bytes(32 * [7])
    st.event(slots.EV_INSTALLED, 0, 1, "1.0")
    slots.save(backend, st)
    return backend


def test_deploy_warns_about_slots_and_drops_them(board):
    from umeter.ota import slots, trust

    bd = board.board_dir
    for rel in SOURCES:  # the firmware as a deploy leaves it (the board directory is the device's fs)
        (bd / rel).parent.mkdir(parents=True, exist_ok=True)
        (bd / rel).write_bytes((deploy.FIRMWARE_DIR / rel).read_bytes())
    (bd / "board.py").write_bytes((ROOT / "boards" / "sim" / "board.py").read_bytes())
    backend = fake_installed_slot(bd)
    trust_before = (bd / "ota" / "otatrust.bin").read_bytes()
    # Without --drop-slots: a warning that the slot wins, and the slot is kept.
    r = meterctl("deploy", "--board", "sim", "--port", board.pty_path)
    assert r.returncode == 0 and "0 copied" in r.stdout, r.stdout + r.stderr
    assert "warning: the device holds OTA app slots (slot_a)" in r.stderr and "starts slot a" in r.stderr
    assert "--drop-slots" in r.stderr and (bd / "slot_a" / "MANIFEST").exists()
    restart(board)  # the boot stage prefers the slot (refused: safe state): the deployed app does not run
    r = meterctl("status", "--port", board.pty_path)
    assert r.returncode == 2 and "not running" in r.stderr, r.stdout + r.stderr
    # --drop-slots: the slot directory and its pins go; counters and the trust entry (security counter) stay.
    r = meterctl("deploy", "--board", "sim", "--port", board.pty_path, "--drop-slots")
    assert r.returncode == 0, r.stderr
    assert "removed the OTA slots (slot_a)" in r.stdout and "warning" not in r.stderr
    assert not (bd / "slot_a").exists()
    st = slots.load(backend)
    assert st.active is None and st.digests == [None, None]
    assert st.counts[slots.COUNTERS.index("installed")] == 1 and st.events
    assert (bd / "ota" / "otatrust.bin").read_bytes() == trust_before and trust.load(backend).board == "sim"
    restart(board)
    status = wait_for_windows(board, 1)  # the freshly deployed app runs
    assert status["software_id"]["mode"] == "development"
    # Nothing left to warn about or drop.
    r = meterctl("deploy", "--board", "sim", "--port", board.pty_path, "--drop-slots")
    assert r.returncode == 0 and "removed the OTA slots" not in r.stdout and "warning" not in r.stderr
