"""Bad input to deploy, flash-micropython, status and watch: exactly one clear error line on stderr, a
non-zero exit, and nothing written (the virtual board's files unchanged, esptool never run). Also the
flash-micropython success paths with a fake esptool, and its command spelling against the installed esptool.
No test talks to a real serial port: ports are the virtual board's pty, a pty nobody serves, or absent."""
import hashlib
import os
import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from meterctl import boards, cmd_deploy, cmd_flash, deploy
from meterctl.cli import CliError, main
from meterctl.remote import RemoteError
from meterctl.vboard import ROOT, VirtualBoard

ABSENT_PORT = "/dev/umeter-no-such-port-%d" % os.getpid()
REAL_BOARDS = sorted(name for name, b in boards.discover().items() if b.arch)


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_error(code, err, command, *needles):
    lines = err.splitlines()
    assert code == 2, (code, err)
    assert len(lines) == 1, err
    assert lines[0].startswith("meterctl %s: error: " % command), lines[0]
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def snapshot(directory):
    return {p.relative_to(directory).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(Path(directory).rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def silent_port():
    """A pty nobody serves: opening works, nothing ever answers."""
    master, slave = os.openpty()
    yield os.ttyname(slave)
    os.close(slave)
    os.close(master)


@pytest.fixture(scope="module")
def bare_board(tmp_path_factory):
    """A virtual board with an empty filesystem and no firmware on its import path: a fresh MicroPython."""
    tmp = tmp_path_factory.mktemp("bare")
    repo = tmp / "repo"
    repo.mkdir()
    (repo / "host_tools").symlink_to(ROOT / "host_tools")
    with VirtualBoard(tmp / "board", repo=repo) as vb:
        assert vb.wait_ready()
        yield vb


# ---- deploy -------------------------------------------------------------------------------------------

def test_deploy_missing_port(capsys):
    code, out, err = run_cli(capsys, "deploy", "--board", "sim")
    assert_one_error(code, err, "deploy", "no port given", "--port")
    assert out == ""


def test_deploy_absent_port(capsys):
    code, out, err = run_cli(capsys, "deploy", "--board", "sim", "--port", ABSENT_PORT)
    assert_one_error(code, err, "deploy", "no such port", ABSENT_PORT)


def test_deploy_wrong_and_missing_board_list_the_valid_ones(capsys, bare_board):
    before = snapshot(bare_board.board_dir)
    valid = sorted(boards.discover())
    assert {"sim", "esp32_devkitc", "rp2040_pico"} <= set(valid)
    code, out, err = run_cli(capsys, "deploy", "--board", "esp32_devkit", "--port", bare_board.pty_path)
    assert_one_error(code, err, "deploy", "unknown board 'esp32_devkit'", *valid)
    code, out, err = run_cli(capsys, "deploy", "--port", bare_board.pty_path)
    assert_one_error(code, err, "deploy", "no board given", *valid)
    # A valid board that is not this device (the virtual board is the unix port on x86-64): asked, refused.
    for name in REAL_BOARDS:
        for extra in ([], ["--no-compile"]):
            code, out, err = run_cli(capsys, "deploy", "--board", name, "--port", bare_board.pty_path, *extra)
            assert_one_error(code, err, "deploy", "board %s is an" % name, "runs MicroPython for linux",
                             "wrong --board?")
    assert snapshot(bare_board.board_dir) == before


def test_deploy_compile_failure_touches_nothing(capsys, bare_board, tmp_path):
    src = tmp_path / "fw"
    shutil.copytree(ROOT / "firmware", src, ignore=shutil.ignore_patterns("__pycache__"))
    (src / "umeter" / "broken.py").write_text("x = 1\ndef f(:\n    pass\n")
    before = snapshot(bare_board.board_dir)
    code, out, err = run_cli(capsys, "deploy", "--board", "esp32_devkitc", "--port", bare_board.pty_path,
                             "--source", src)
    assert_one_error(code, err, "deploy", "compile failed", "broken.py", "line 2", "SyntaxError")
    assert snapshot(bare_board.board_dir) == before
    # A tree without the boot stage is not firmware.
    (src / "main.py").unlink()
    code, out, err = run_cli(capsys, "deploy", "--board", "sim", "--port", bare_board.pty_path,
                             "--source", src)
    assert_one_error(code, err, "deploy", "main.py missing")
    assert snapshot(bare_board.board_dir) == before


def test_deploy_device_not_answering(capsys, silent_port):
    code, out, err = run_cli(capsys, "deploy", "--board", "sim", "--port", silent_port, "--timeout", "0.5")
    assert_one_error(code, err, "deploy", "no answer from %s" % silent_port)
    assert out == ""


class FlakyDevice:
    """Stands in for remote.Remote: answers `answers` commands like an empty board, then goes silent;
    `commit` is what it says after checking an uploaded file's hash."""

    def __init__(self, port, answers, commit="ok"):
        self.port, self.left, self.commit = port, answers, commit

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass

    def exec(self, code, timeout=None):
        if self.left == 0:
            raise RemoteError("lost contact with %s: timeout waiting for first EOF reception" % self.port)
        self.left -= 1
        if "sys.platform" in code:
            return "linux 2822\n"      # the unix port (x64, .mpy 6.3), as the virtual board answers
        return self.commit + "\n" if "_umd_commit(" in code else ""


@pytest.mark.parametrize("answers,commit,needle", [
    (40, "ok", "deploy incomplete ("),
    (1000, "mismatch 00ff", "hash mismatch after copying"),
])
def test_deploy_never_reports_a_broken_transfer_as_success(capsys, monkeypatch, silent_port, answers, commit,
                                                           needle):
    monkeypatch.setattr(cmd_deploy, "Remote", lambda port, timeout: FlakyDevice(port, answers, commit))
    code, out, err = run_cli(capsys, "deploy", "--board", "sim", "--port", silent_port)
    lines = err.splitlines()
    assert code == 2 and out == "", out
    assert lines[-1].startswith("meterctl deploy: error: ") and needle in lines[-1], lines[-1]
    assert sum("error" in line for line in lines) == 1
    if commit == "ok":
        assert "run deploy again" in lines[-1]


class Answers:
    port = "/dev/fake"

    def __init__(self, reply):
        self.reply = reply

    def exec(self, code, timeout=None):
        assert "sys.platform" in code
        return self.reply


@pytest.fixture(scope="module")
def pico_build(tmp_path_factory):
    board = boards.get("rp2040_pico")
    return board, deploy.build(board, tmp_path_factory.mktemp("build"))


def mpy(arch, version, sub):
    return arch << 10 | sub << 8 | version     # sys.implementation._mpy


@pytest.mark.parametrize("reply,needle", [
    ("rp2 %d" % mpy(4, 6, 3), None),
    ("rp2 %d" % mpy(7, 6, 3), None),       # an armv7emsp core (RP2350) runs armv6m code
    ("esp32 %d" % mpy(10, 6, 3), "is an rp2040, but the device on /dev/fake runs MicroPython for esp32"),
    ("rp2 %d" % mpy(0, 6, 3), "compiles for armv6m, but the device on /dev/fake runs no native code"),
    ("rp2 %d" % mpy(4, 6, 1), "loads .mpy v6.1, mpy-cross writes v6.3"),
    ("rp2 %d" % mpy(4, 5, 0), "loads .mpy v5.0"),
    ("Traceback", "did not say what it is"),
])
def test_deploy_checks_the_device_before_writing(pico_build, reply, needle):
    board, items = pico_build
    if needle is None:
        deploy.check_target(Answers(reply), board, items)
    else:
        with pytest.raises(CliError, match=re.escape(needle)):
            deploy.check_target(Answers(reply), board, items)


@pytest.mark.parametrize("name", REAL_BOARDS)
def test_build_compiles_for_the_board_arch(tmp_path, name):
    """What deploy would install on each real board: .mpy for its arch, main.py as source, board.py."""
    board = boards.get(name)
    items = deploy.build(board, tmp_path)
    remote = [it.remote for it in items]
    sources = deploy.firmware_sources(deploy.FIRMWARE_DIR)
    assert remote[-2:] == ["/board.py", "/main.py"]
    assert len(items) == len(sources) + 1
    assert all(r.endswith(".mpy") for r in remote[:-2]) and "/umeter/app.mpy" in remote
    app = next(it for it in items if it.remote == "/umeter/app.mpy")
    assert app.data[:1] == b"M" and app.sha256 == hashlib.sha256(app.data).hexdigest()
    # The viper kernels are machine code for the board's CPU (.mpy header byte 2: arch << 2 | sub-version).
    kernels = next(it for it in items if it.remote == "/umeter/metering/kernels.mpy")
    assert kernels.data[2] >> 2 == {"xtensawin": 10, "armv6m": 4}[board.arch]
    assert "esp32_devkitc" in REAL_BOARDS and "rp2040_pico" in REAL_BOARDS
    assert next(it for it in items if it.remote == "/board.py").data == board.path.read_bytes()


# ---- status / watch -----------------------------------------------------------------------------------

@pytest.mark.parametrize("command", ["status", "watch"])
def test_status_watch_missing_and_absent_port(capsys, command):
    code, out, err = run_cli(capsys, command)
    assert_one_error(code, err, command, "no port given")
    code, out, err = run_cli(capsys, command, "--port", ABSENT_PORT)
    assert_one_error(code, err, command, "no such port")
    assert out == ""


@pytest.mark.parametrize("command", ["status", "watch"])
def test_status_watch_device_not_answering(capsys, silent_port, command):
    code, out, err = run_cli(capsys, command, "--port", silent_port, "--timeout", "0.5")
    assert_one_error(code, err, command, "no answer from %s" % silent_port)
    assert out == ""


@pytest.mark.parametrize("command", ["status", "watch"])
def test_status_watch_without_firmware(capsys, bare_board, command):
    code, out, err = run_cli(capsys, command, "--port", bare_board.pty_path)
    assert_one_error(code, err, command, "no umeter firmware on %s" % bare_board.pty_path, "meterctl deploy")
    assert out == ""


def test_watch_bad_interval_and_count(capsys, bare_board):
    code, out, err = run_cli(capsys, "watch", "--port", bare_board.pty_path, "--interval", "0")
    assert_one_error(code, err, "watch", "--interval")
    code, out, err = run_cli(capsys, "watch", "--port", bare_board.pty_path, "--count", "0")
    assert_one_error(code, err, "watch", "--count")


# ---- flash-micropython --------------------------------------------------------------------------------

def esp_image(chip_id=0, segments=3, size=4096):
    """An ESP image header (magic, segments, flash mode DIO, size/freq, entry) + extended header."""
    head = struct.pack("<BBBBI", 0xE9, segments, 2, 0x20, 0x40080000)
    ext = struct.pack("<B3sHBHH4sB", 0xEE, b"\0\0\0", chip_id, 0, 0, 0xFFFF, b"\0" * 4, 1)
    return head + ext + bytes(range(256)) * ((size - 24) // 256)


def uf2(blocks=3, family=0xE48BFF56, flags=0x2000):
    out = b""
    for n in range(blocks):
        head = struct.pack("<8I", 0x0A324655, 0x9E5D5157, flags, 0x10000000 + 256 * n, 256, n, blocks, family)
        out += head + bytes([n]) * 256 + b"\0" * (476 - 256) + struct.pack("<I", 0x0AB16F30)
    return out


class Calls(list):
    fake = None


@pytest.fixture
def esptool_calls(monkeypatch):
    calls = Calls()

    def fake(cmd):
        calls.append(cmd)
        return fake.status

    fake.status = 0
    monkeypatch.setattr(cmd_flash, "run_esptool", fake)
    calls.fake = fake
    return calls


def write(tmp_path, name, data):
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_flash_esp32_runs_esptool_write_flash(capsys, tmp_path, silent_port, esptool_calls):
    image = write(tmp_path, "ESP32_GENERIC.bin", esp_image())
    code, out, err = run_cli(capsys, "flash-micropython", "--board", "esp32_devkitc", "--port", silent_port,
                             "--firmware", image)
    assert (code, err) == (0, "")
    assert esptool_calls == [[sys.executable, "-m", "esptool", "--chip", "esp32", "--port", silent_port,
                              "--baud", "460800", "write-flash", "-z", "0x1000", str(image)]]
    assert "meterctl deploy --board esp32_devkitc --port %s" % silent_port in out
    esptool_calls.clear()
    code, out, err = run_cli(capsys, "flash-micropython", "--board", "esp32_devkitc", "--port", silent_port,
                             "--firmware", image, "--erase")
    assert code == 0 and [c[9] for c in esptool_calls] == ["erase-flash", "write-flash"]


def test_flash_esptool_failure_is_one_line(capsys, tmp_path, silent_port, esptool_calls):
    image = write(tmp_path, "fw.bin", esp_image())
    esptool_calls.fake.status = 2
    code, out, err = run_cli(capsys, "flash-micropython", "--board", "esp32_devkitc", "--port", silent_port,
                             "--firmware", image)
    assert_one_error(code, err, "flash-micropython", "esptool write-flash failed with exit status 2")
    assert len(esptool_calls) == 1


def test_esptool_accepts_our_command_line(tmp_path):
    """The installed esptool parses the command (it fails only on the absent port, never on usage)."""
    image = write(tmp_path, "fw.bin", esp_image())
    for cmd in cmd_flash.esptool_commands("esp32", ABSENT_PORT, 460800, 0x1000, image, erase=True):
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        text = proc.stdout + proc.stderr
        assert proc.returncode != 0 and "Could not open %s" % ABSENT_PORT in text, text
        assert "No such command" not in text and "No such option" not in text


def test_flash_rp2040_prints_uf2_steps(capsys, tmp_path, esptool_calls):
    image = write(tmp_path, "RPI_PICO.uf2", uf2())
    code, out, err = run_cli(capsys, "flash-micropython", "--board", "rp2040_pico", "--firmware", image)
    assert (code, err) == (0, "")
    for needle in ("BOOTSEL", "RPI-RP2", str(image), "3 blocks", "meterctl deploy --board rp2040_pico"):
        assert needle in out
    assert esptool_calls == []


BAD_FIRMWARE = [
    ("esp32_devkitc", "elf.bin", b"\x7fELF" + bytes(4000), "is not an ESP32 firmware image"),
    ("esp32_devkitc", "short.bin", b"\xe9\x03\x02", "too short"),
    ("esp32_devkitc", "bad-header.bin", b"\xe9\x00" + esp_image()[2:], "corrupt ESP32 image header"),
    ("esp32_devkitc", "s3.bin", esp_image(chip_id=9), "image for esp32s3"),
    ("esp32_devkitc", "pico.uf2", uf2(), "it is a UF2 file"),
    ("rp2040_pico", "esp.bin", esp_image(), "looks like an ESP32 image"),
    ("rp2040_pico", "torn.uf2", uf2()[:-100], "not a multiple of 512"),
    ("rp2040_pico", "corrupt.uf2", uf2()[:512] + b"\0" * 4 + uf2()[516:], "block 1 lacks the UF2 magic"),
    ("rp2040_pico", "spliced.uf2", uf2()[:1024] + uf2(blocks=5)[1024:1536], "block 2 has an inconsistent"),
    ("rp2040_pico", "rp2350.uf2", uf2(family=0xE48BFF59), "UF2 for rp2350"),
    ("rp2040_pico", "empty.uf2", b"", "is empty"),
]


@pytest.mark.parametrize("board,name,data,needle", BAD_FIRMWARE, ids=[b[1] for b in BAD_FIRMWARE])
def test_flash_bad_firmware_never_runs_esptool(capsys, tmp_path, silent_port, esptool_calls, board, name,
                                               data, needle):
    image = write(tmp_path, name, data)
    code, out, err = run_cli(capsys, "flash-micropython", "--board", board, "--port", silent_port,
                             "--firmware", image)
    assert_one_error(code, err, "flash-micropython", needle)
    assert esptool_calls == [] and out == ""


def test_flash_bad_arguments(capsys, tmp_path, esptool_calls):
    image = write(tmp_path, "fw.bin", esp_image())
    cases = [
        (["--board", "esp32_devkit", "--firmware", image], "unknown board 'esp32_devkit'"),
        (["--firmware", image], "no board given"),
        (["--board", "sim", "--firmware", image], "nothing to flash"),
        (["--board", "esp32_devkitc"], "no firmware given"),
        (["--board", "esp32_devkitc", "--firmware", tmp_path / "missing.bin"], "cannot read firmware"),
        (["--board", "esp32_devkitc", "--firmware", tmp_path], "is a directory"),
        (["--board", "esp32_devkitc", "--firmware", image], "no port given"),
        (["--board", "esp32_devkitc", "--firmware", image, "--port", ABSENT_PORT], "no such port"),
    ]
    for argv, needle in cases:
        code, out, err = run_cli(capsys, "flash-micropython", *argv)
        assert_one_error(code, err, "flash-micropython", needle)
    assert esptool_calls == []
