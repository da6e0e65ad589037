"""The virtual board through the real mpremote: exec, resume, fs, soft/hard reset, power cuts, a background
loop that keeps running across mpremote sessions, and the `meterctl sim` command around it.

A tiny test main.py (a counter in a _thread) stands in for the meter app."""
import hashlib
import io
import os
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from meterctl import cmd_sim, simapp
from meterctl.cli import CliError, main as meterctl_main
from meterctl.vboard import BOOTSTRAP, HARD_RESET_STATUS, SANDBOX_FAILED_STATUS, VirtualBoard

BIN = Path(sys.executable).parent
MPREMOTE = str(BIN / "mpremote")
METERCTL = str(BIN / "meterctl")

COUNTER_MAIN = """\
import _thread, time
counter = [0]
def _tick():
    while True:
        counter[0] += 1
        time.sleep_ms(2)
_thread.start_new_thread(_tick, ())
print("test main: started")
"""


def mpremote(board, *args, timeout=30):
    """Run mpremote against the board; returns stdout. mpremote never times out on a pty itself."""
    proc = subprocess.run([MPREMOTE, "connect", board.pty_path, *args], capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, "mpremote %s failed:\n%s%s" % (args, proc.stdout, proc.stderr)
    return proc.stdout


def counter(board):
    return int(mpremote(board, "resume", "exec", "print(counter[0])").strip())


def hard_reset(board):
    """`mpremote reset` (machine.reset() after 100 ms): wait for the new boot before talking again."""
    boots = board.boots
    mpremote(board, "resume", "reset")
    wait_for(lambda: board.boots > boots)
    assert board.wait_ready()


def wait_for(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError("condition not met in %ss" % timeout)


class Terminal:
    """A user on the board's pty, byte by byte."""

    def __init__(self, path):
        self.fd = os.open(path, os.O_RDWR | os.O_NOCTTY)
        self.seen = b""

    def write(self, data):
        os.write(self.fd, data)

    def read_until(self, ending, timeout=10.0):
        deadline = time.monotonic() + timeout
        while ending not in self.seen:
            left = deadline - time.monotonic()
            assert left > 0, "did not see %r; got %r" % (ending, self.seen[-300:])
            if select.select([self.fd], [], [], left)[0]:
                self.seen += os.read(self.fd, 4096)
        at = self.seen.index(ending) + len(ending)
        out, self.seen = self.seen[:at], self.seen[at:]
        return out

    def close(self):
        os.close(self.fd)


@pytest.fixture
def board_dir(tmp_path):
    d = tmp_path / "board"
    d.mkdir()
    (d / "main.py").write_text(COUNTER_MAIN)
    return d


@pytest.fixture
def board(board_dir):
    with VirtualBoard(board_dir) as vb:
        yield vb


def test_exec_and_resume(board):
    assert mpremote(board, "exec", "print(1+1)").strip() == "2"
    assert mpremote(board, "resume", "exec", "print(6*7)").strip() == "42"
    assert board.pty_path.startswith("/dev/pts/")


def test_fs_lands_in_the_board_dir_only(board, board_dir, tmp_path):
    name = "vboard_probe_%d.bin" % os.getpid()
    payload = os.urandom(3000) + b"\n\r\n\x00end"
    local = tmp_path / "local.bin"
    local.write_bytes(payload)
    mpremote(board, "fs", "cp", str(local), ":/" + name)
    assert (board_dir / name).read_bytes() == payload
    assert not Path("/" + name).exists()
    listing = mpremote(board, "fs", "ls", ":/")
    assert name in listing and "main.py" in listing
    digest = mpremote(board, "fs", "sha256sum", ":/" + name)
    assert hashlib.sha256(payload).hexdigest() in digest
    # The root the firmware sees is the board directory, not the host's.
    root = mpremote(board, "exec", "import os; print(sorted(os.listdir('/')))")
    assert "main.py" in root and "'etc'" not in root and "'usr'" not in root
    back = tmp_path / "back.bin"
    mpremote(board, "fs", "cp", ":/" + name, str(back))
    assert back.read_bytes() == payload


def test_soft_reset_from_mpremote_then_exec(board):
    boots = board.boots
    mpremote(board, "soft-reset")
    assert board.boots > boots
    assert mpremote(board, "exec", "print('after', 2*21)").strip() == "after 42"
    # A raw-REPL soft reset skips main.py, as on a real port; the app is not running.
    out = mpremote(board, "resume", "exec", "print('counter' in globals())")
    assert out.strip() == "False"


def test_friendly_ctrl_d_soft_reboots_and_runs_main(board):
    term = Terminal(board.pty_path)
    try:
        term.write(b"\r\x03")
        term.read_until(b">>> ")
        term.write(b"x = 5\r")
        term.read_until(b">>> ")
        term.write(b"\x04")
        term.read_until(b"MPY: soft reboot\r\n")
        term.read_until(b"test main: started\r\n")
        term.read_until(b"MicroPython ")
        term.read_until(b">>> ")
        term.write(b"print('x' in globals(), counter[0] >= 0)\r")
        assert b"False True\r\n" in term.read_until(b">>> ")
    finally:
        term.close()


def test_hard_reset_runs_main_again(board):
    mpremote(board, "exec", "print(1)")           # soft reset: main.py skipped
    assert "False" in mpremote(board, "resume", "exec", "print('counter' in globals())")
    hard_reset(board)                             # machine.reset(): a power-on boot
    assert board.last_exit == HARD_RESET_STATUS
    assert wait_for(lambda: counter(board) > 0) > 0


def test_background_loop_survives_mpremote_sessions(board):
    first = counter(board)
    time.sleep(0.2)
    second = counter(board)
    assert second > first
    # Code run from the REPL that never ends: the next session's Ctrl-C stops it, not the loop.
    mpremote(board, "resume", "exec", "--no-follow", "import time\nwhile True:\n    time.sleep_ms(1)")
    time.sleep(0.2)
    third = counter(board)
    time.sleep(0.2)
    assert counter(board) > third > second
    # The same through the normal (not raw-paste) raw REPL, driven byte by byte.
    term = Terminal(board.pty_path)
    try:
        term.write(b"\r\x03\r\x01")
        term.read_until(b"raw REPL; CTRL-B to exit\r\n>")
        term.write(b"while True:\n  pass\n\x04")
        term.read_until(b"OK")
        time.sleep(0.1)  # let it start: a Ctrl-C that precedes execution is only a character
        term.write(b"\x03")
        assert b"KeyboardInterrupt" in term.read_until(b"\x04>")
        term.write(b"print(counter[0] > %d)\x04" % third)
        assert term.read_until(b"\x04>").startswith(b"OKTrue\r\n\x04")
        term.write(b"\r\x02")
    finally:
        term.close()


def test_power_cut_keeps_files_and_reboots(board, board_dir, tmp_path):
    local = tmp_path / "keep.txt"
    local.write_bytes(b"survives power cuts\n")
    mpremote(board, "fs", "cp", str(local), ":/keep.txt")
    mpremote(board, "resume", "exec", "in_ram = 1")
    pid, boots = board.pid, board.boots
    board.power_cut()
    assert board.boots == boots + 1 and board.pid != pid and board.last_exit == -signal.SIGKILL
    assert (board_dir / "keep.txt").read_bytes() == b"survives power cuts\n"
    digest = mpremote(board, "fs", "sha256sum", ":/keep.txt")
    assert hashlib.sha256(b"survives power cuts\n").hexdigest() in digest
    # RAM is gone, main.py ran again (a power-on boot), and the board still answers after a restart.
    hard_reset(board)
    out = mpremote(board, "resume", "exec", "print('in_ram' in globals(), counter[0] >= 0)")
    assert out.strip() == "False True"
    board.restart()
    assert board.boots >= boots + 3
    assert mpremote(board, "resume", "exec", "print(counter[0] >= 0)").strip() == "True"


def test_custom_main_and_random_power_cuts(tmp_path):
    script = tmp_path / "entry.py"
    script.write_text("print('custom entry')\nmarker = 7\n")
    d = tmp_path / "b"
    events = []
    with VirtualBoard(d, main=script, log=events.append) as vb:
        assert mpremote(vb, "resume", "exec", "print(marker)").strip() == "7"
        vb.start_power_cuts(0.05, 0.1, seed=3)
        wait_for(lambda: vb.boots >= 4)
    assert d.is_dir() and sum("power cut" in e for e in events) >= 3


def test_meterctl_sim_no_display(board_dir):
    proc = subprocess.Popen([METERCTL, "sim", "--no-display", "--board-dir", str(board_dir)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines = []
        while not any("/dev/pts/" in line for line in lines):
            line = proc.stdout.readline()
            assert line, "meterctl sim ended early: %s" % "".join(lines)
            lines.append(line)
        text = "".join(lines)
        pty = re.search(r"(/dev/pts/\d+)", text).group(1)
        fw_pid = int(re.search(r"boot 1: pid (\d+)", text).group(1))

        class Board:
            pty_path = pty

        assert wait_for(lambda: counter(Board)) > 0
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0
    assert "virtual board stopped" in rest
    assert not Path("/proc/%d" % fw_pid).exists() or "zombie" in Path("/proc/%d/status" % fw_pid).read_text()


def test_meterctl_sim_bad_input(tmp_path, capsys, monkeypatch):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    args = ["sim", "--no-display", "--scenario", str(bad), "--board-dir", str(tmp_path / "b")]
    assert meterctl_main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not valid JSON" in err
    assert not (tmp_path / "b").exists()
    assert meterctl_main(["sim", "run", "--scenario", str(tmp_path / "none.json"), "--seconds", "1"]) == 2
    assert "cannot read scenario" in capsys.readouterr().err
    afile = tmp_path / "afile"
    afile.write_text("")
    assert meterctl_main(["sim", "--no-display", "--board-dir", str(afile)]) == 2
    assert "not a directory" in capsys.readouterr().err
    # The meter app's hooks are imported lazily; without them: one clear error line.
    monkeypatch.setitem(sys.modules, "meterctl.simapp", None)
    with pytest.raises(CliError, match="not available yet"):
        cmd_sim.simapp()
    good = tmp_path / "good.json"
    good.write_text('{"vrms": 230}')
    assert meterctl_main(["sim", "run", "--scenario", str(good), "--seconds", "1", "--json"]) == 2
    assert "not available yet" in capsys.readouterr().err


def test_unread_output_never_stalls_the_firmware(tmp_path):
    d = tmp_path / "chatty"
    d.mkdir()
    (d / "main.py").write_text(
        "import _thread\n"
        "def _talk():\n"
        "    for i in range(3000):\n"
        "        print('%05d' % i + 'x' * 94)\n"
        "    with open('/done', 'w') as f:\n"
        "        f.write('3000')\n"
        "_thread.start_new_thread(_talk, ())\n")
    with VirtualBoard(d) as vb:
        # ~300 KB of output with nobody on the pty: dropped like a UART's; the thread runs to its end.
        wait_for(lambda: (d / "done").exists(), timeout=30)
        assert (d / "done").read_text() == "3000"
        assert mpremote(vb, "resume", "exec", "print('still', 'answering')").strip() == "still answering"


def test_sandbox_failure_never_reaches_a_repl(tmp_path):
    env = dict(os.environ, UMETER_VB_DIR=str(tmp_path / "missing"), MICROPYPATH=".frozen")
    proc = subprocess.run([str(BIN / "micropython"), str(BOOTSTRAP)], input="print('RE' + 'PL')\n",
                          capture_output=True, text=True, env=env, timeout=30)
    assert proc.returncode == SANDBOX_FAILED_STATUS
    assert "REPL" not in proc.stdout and "OSError" in proc.stdout + proc.stderr


def test_crash_loop_stops_rebooting(tmp_path):
    d = tmp_path / "crashy"
    d.mkdir()
    (d / "main.py").write_text("import sys\nprint('cannot start: the reason')\nsys.exit(3)\n")
    with VirtualBoard(d) as vb:
        wait_for(lambda: vb.error)
        assert "crash loop" in vb.error and vb.boots == 5 and vb.last_exit == 3
        assert vb.error.endswith("its last line: cannot start: the reason")
        # the live display ends with that reason instead of waiting for a status forever
        with pytest.raises(CliError, match="the reason"):
            simapp.display(vb, out=io.StringIO(), interval=0.01)
