"""Virtual board hygiene (issue 11, item 9): the README's examples run literally from another directory
with relative paths; unwritable images fail in one line; a board directory or image in use is refused;
an image whose keys are gone is not continued under a new key unless asked; scenarios are validated
before anything is written; the sim's key files are their owner's only."""
import json
import os
import re
import shlex
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from meterctl import keyfiles
from meterctl.cli import main as meterctl_main
from meterctl.keys import KeyFileError

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SCENARIO = {"vrms": 230.0, "irms": 10.0, "seed": 2}
IMAGE_SIZE = 2 * 1024 * 1024


def readme_command(prefix):
    """The README's command line that starts with prefix (a code block line or an inline `...`)."""
    text = (ROOT / "README.md").read_text()
    for m in re.finditer(r"^(%s[^\n`]*)$|`(%s[^`]*)`" % (re.escape(prefix), re.escape(prefix)), text, re.M):
        return shlex.split(m.group(1) or m.group(2))
    raise AssertionError("README has no example starting with %r" % prefix)


def literal(argv):
    """A README command as run from the repository: .venv/bin/x (or a bare meterctl) is the venv's."""
    tool = Path(argv[0]).name
    return [str(BIN / tool)] + argv[1:]


def run(argv, cwd, timeout=300):
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def meterctl(*args, cwd):
    return run([str(BIN / "meterctl")] + list(args), cwd)


def sim_run(*args, cwd):
    return meterctl("sim", "run", "--scenario", "s.json", "--seconds", "2", *args, cwd=cwd)


def one_line_error(r, *words):
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    for w in words:
        assert w in lines[0], lines[0]
    return lines[0]


def owner_only(path):
    return not stat.S_IMODE(path.stat().st_mode) & 0o077


def test_readme_sim_run_literally_from_another_directory(tmp_path):
    """The README's `sim run` line, as printed, in a directory that is not the repository: the image and
    its keys land there (owner-only), the hour is metered with a flat heap and no missed window, and a
    second run continues the image."""
    argv = readme_command(".venv/bin/meterctl sim run")
    (tmp_path / "scenario.json").write_text(json.dumps(SCENARIO))
    r = run(literal(argv), tmp_path, timeout=600)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    image = tmp_path / argv[argv.index("--image") + 1]
    seconds = float(argv[argv.index("--seconds") + 1])
    assert image.is_file() and image.stat().st_size == IMAGE_SIZE
    keys = image.with_name(image.name + ".keys")
    assert all(owner_only(p) for p in [image, keys] + list(keys.iterdir()))
    mem = [int(m) for m in re.findall(r"mem_free (\d+)", r.stderr)]
    print("simulated s per host s: %.1f; mem_free over the run: %s" % (out["sim_s_per_host_s"], mem))
    assert len(mem) >= 10 and max(mem) - min(mem) < 64 * 1024, "heap use grows: %s" % mem
    assert out["t_s"] == seconds and out["windows"] >= seconds - 2 and out["faults"] == 0
    # every second is in the registers (to the metering accuracy for this scenario's 2300 W, 0.05 %;
    # tests/test_sim_energy.py checks the bookkeeping itself to 0.01 %)
    assert abs(out["energy_import_wh"] / (2300.0 * seconds / 3600) - 1) < 5e-4, out["energy_import_wh"]
    # boot + a checkpoint a minute + the closing one + a profile record per 15 minutes
    assert out["records"] == 1 + (seconds // 60 - 1) + 1 + seconds // 900
    again = argv[:argv.index("--seconds") + 1] + ["5"] + argv[argv.index("--seconds") + 2:]
    r2 = run(literal(again), tmp_path)
    assert r2.returncode == 0, r2.stderr
    assert json.loads(r2.stdout.strip().splitlines()[-1])["t_s"] == seconds + 5


def test_readme_board_and_export_examples_from_another_directory(tmp_path):
    """`meterctl sim` on a relative board directory, the README's mpremote line against it, Ctrl-C, then
    the README's export line, literally, from that directory."""
    (tmp_path / "scenario.json").write_text(json.dumps(SCENARIO))
    proc = subprocess.Popen([str(BIN / "meterctl"), "sim", "--board-dir", "sim_state", "--scenario",
                             "scenario.json", "--no-display"], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=dict(os.environ, UMETER_SIM_SPEED="10"))
    try:
        pty = next(line.split()[3] for line in proc.stdout if line.startswith("virtual board on "))
        deadline = time.monotonic() + 30
        while not (tmp_path / "sim_state" / "status.json").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        status_argv = [a.replace("/dev/pts/N", pty) for a in readme_command(".venv/bin/mpremote connect")]
        r = run(literal(status_argv), tmp_path, timeout=60)
        assert r.returncode == 0 and "'board': 'sim'" in r.stdout, r.stdout + r.stderr
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    keys = tmp_path / "sim_state" / "keys"
    assert all(owner_only(p) for p in [keys, tmp_path / "sim_state" / "flash.img"] + list(keys.iterdir()))
    export = literal(readme_command("meterctl export --image sim_state"))
    r = run(export + ["--format", "json", "--out", "x.json"], tmp_path)
    assert r.returncode == 0, r.stderr
    rows = json.loads((tmp_path / "x.json").read_text())
    rows = rows["records"] if isinstance(rows, dict) else rows
    assert rows[-1]["type"] == "checkpoint"  # Ctrl-C checkpointed before the board stopped


def test_unwritable_image_and_result_fail_in_one_line(tmp_path):
    (tmp_path / "s.json").write_text(json.dumps(SCENARIO))
    (tmp_path / "afile").write_text("not a directory")
    r = sim_run("--image", "afile/m.img", cwd=tmp_path)
    one_line_error(r, "cannot write image", "afile")
    r = sim_run("--out", "afile/r.json", cwd=tmp_path)
    one_line_error(r, "cannot write result file")
    r = sim_run("--image", "sub/m.img", "--out",
                 "r.json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "sub" / "m.img").stat().st_size == IMAGE_SIZE
    assert json.loads((tmp_path / "r.json").read_text())["t_s"] == 2


def _wait_for(path, timeout=30):
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, "%s never appeared" % path
        time.sleep(0.05)


def test_a_board_or_image_in_use_is_refused_and_stale_locks_are_taken_over(tmp_path):
    (tmp_path / "s.json").write_text(json.dumps(SCENARIO))
    busy = subprocess.Popen([str(BIN / "meterctl"), "sim", "run", "--scenario", "s.json", "--seconds", "1e6",
                             "--image", "busy.img"], cwd=tmp_path, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    board = subprocess.Popen([str(BIN / "meterctl"), "sim", "--board-dir", "b", "--no-display"], cwd=tmp_path,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for(tmp_path / "busy.img.lock")
        _wait_for(tmp_path / "b" / ".vboard.lock")
        r = sim_run("--image", "busy.img", cwd=tmp_path)
        one_line_error(r, "busy.img", "in use", "pid %d" % busy.pid)
        r = meterctl("sim", "--board-dir", "b", "--no-display", cwd=tmp_path)
        one_line_error(r, "board directory", "in use", "pid %d" % board.pid)
        r = sim_run("--image", "b/flash.img",
                     cwd=tmp_path)
        one_line_error(r, "flash.img", "in use")
    finally:
        for p in (busy, board):
            p.send_signal(signal.SIGINT)
            p.wait(timeout=30)
    assert not (tmp_path / "busy.img.lock").exists() and not (tmp_path / "b" / ".vboard.lock").exists()
    dead = subprocess.Popen(["true"])
    dead.wait()
    (tmp_path / "busy.img.lock").write_text("%d\n" % dead.pid)  # its owner was killed
    r = sim_run("--image", "busy.img", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert not (tmp_path / "busy.img.lock").exists()


def test_an_image_whose_keys_are_gone_needs_new_key(tmp_path):
    (tmp_path / "s.json").write_text(json.dumps(SCENARIO))
    r = sim_run("--image", "m.img", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    for p in (tmp_path / "m.img.keys").iterdir():
        p.unlink()
    (tmp_path / "m.img.keys").rmdir()
    before = (tmp_path / "m.img").read_bytes()
    r = sim_run("--image", "m.img", cwd=tmp_path)
    one_line_error(r, "m.img.keys", "missing", "--new-key")
    assert (tmp_path / "m.img").read_bytes() == before and not (tmp_path / "m.img.keys").exists()
    r = sim_run("--image", "m.img", "--new-key",
                 "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "m.img.keys" / "keys.bin").is_file()
    # the interactive board: its flash.img without keys/
    board = tmp_path / "b"
    board.mkdir()
    (board / "flash.img").write_bytes(before)
    r = meterctl("sim", "--board-dir", "b", "--no-display", cwd=tmp_path)
    one_line_error(r, "keys", "missing", "--new-key")
    assert sorted(os.listdir(board)) == ["flash.img"]


BAD_SCENARIOS = [
    ('{"vrms": -230}', "vrms must be >= 0"),
    ('{"irms": -1}', "irms must be >= 0"),
    ('{"irms": "5"}', "irms must be a number"),
    ('{"irms": true}', "irms must be a number"),
    ('{"freq_hz": 0}', "freq_hz must be > 0"),
    ('{"freq_hz": -50}', "freq_hz must be > 0"),
    ('{"freq_hz": 2000}', "Nyquist"),
    ('{"freq_hz": NaN}', "NaN is not a number"),
    ('{"vrms": Infinity}', "Infinity is not a number"),
    ('{"vrsm": 230}', "unknown scenario key 'vrsm'"),
    ('{"harmonics": [[41, 1, 1]]}', "Nyquist"),
    ('{"harmonics": [[3, "1", 1]]}', "harmonic v_pct must be a number"),
    ('{"harmonics": 3}', "harmonics must be a list"),
    ('{"adc_bits": 20}', "adc_bits must be <= 16"),
    ('{"noise_lsb": -2}', "noise_lsb must be >= 0"),
    ('{"dc_lsb": [1]}', "dc_lsb must be a number or [v, i]"),
    ('{"rate_hz": 0}', "rate_hz must be >= 1"),
    ('{"block_pairs": 2.5}', "block_pairs must be a whole number"),
    ('[1, 2]', "must be a JSON object"),
    ('{nope', "not valid JSON"),
]


@pytest.mark.parametrize("text,reason", BAD_SCENARIOS)
def test_bad_scenarios_are_refused_with_the_reason_before_anything_is_written(tmp_path, capsys, monkeypatch,
                                                                              text, reason):
    monkeypatch.chdir(tmp_path)
    Path("bad.json").write_text(text)
    for argv in (["sim", "run", "--scenario", "bad.json", "--seconds", "5", "--image", "x.img"],
                 ["sim", "--scenario", "bad.json", "--board-dir", "board", "--no-display"]):
        assert meterctl_main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and reason in err[0] and "bad.json" in err[0], err
    assert sorted(os.listdir(tmp_path)) == ["bad.json"]  # no image, no keys, no board directory
    os.mkdir("b")
    Path("b/scenario.json").write_text(text)  # the board directory's own scenario, read without --scenario
    assert meterctl_main(["sim", "--board-dir", "b", "--no-display"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and reason in err[0] and "scenario.json" in err[0], err
    assert os.listdir("b") == ["scenario.json"]


def test_key_directory_modes(tmp_path):
    keys = tmp_path / "k"
    keys.mkdir(mode=0o755)
    (keys / "keys.bin").write_bytes(b"x" * 46)
    os.chmod(keys, 0o700)
    os.chmod(keys / "keys.bin", 0o644)
    with pytest.raises(KeyFileError, match=r"keys.bin is accessible by other users \(mode 644\); run: chmod"):
        keyfiles.check_key_dir(keys)
    os.chmod(keys / "keys.bin", 0o600)
    os.chmod(keys, 0o755)
    with pytest.raises(KeyFileError, match=r"run: chmod 700"):
        keyfiles.check_key_dir(keys)
    os.chmod(keys / "keys.bin", 0o640)
    keyfiles.tighten_key_dir(keys)  # what the sim does to a key directory an older version made
    keyfiles.check_key_dir(keys)
    assert stat.S_IMODE(keys.stat().st_mode) == 0o700
    assert stat.S_IMODE((keys / "keys.bin").stat().st_mode) == 0o600
