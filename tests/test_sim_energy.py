"""No energy lost at restarts (issue 11, item 5) on the virtual board: N simulated seconds register P*N,
chained runs equal one long run, clean stops (Ctrl-C of the virtual board, machine.reset()) checkpoint
what they metered, and power cuts with the power-fail warning lose nothing while cuts without it lose at
most one checkpoint interval. The 1,000-cut run: `python -m meterctl.powercuts --cuts 1000`."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from meterctl import powercuts

SCENARIO = {"vrms": 230.0, "irms": 5.0, "phase_deg": 0.0, "seed": 4}  # noise-free: one window's P is the P
RATE = 4000  # the sim board's sample rate
TOL = 1e-4   # 0.01 %
MWH = 1e-3   # the registers' figures are whole mWh


def meterctl(*args, cwd=None, timeout=300):
    return subprocess.run([str(Path(sys.executable).with_name("meterctl"))] + list(args), cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)


def sim_run(cwd, image, seconds):
    r = meterctl("sim", "run", "--scenario", "s.json", "--seconds", str(seconds), "--image", image, "--json",
                 cwd=cwd)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


def close(measured, expected):
    return abs(measured - expected) <= expected * TOL + MWH


def test_n_seconds_register_p_times_n_and_chained_runs_equal_one(tmp_path):
    (tmp_path / "s.json").write_text(json.dumps(SCENARIO))
    one = sim_run(tmp_path, "one.img", 60)
    p = one["p_w"]
    print("60 s: %.3f Wh registered, P*N/3600 = %.4f Wh (error %+.4f %%)"
          % (one["energy_import_wh"], p * 60 / 3600, 100 * (one["energy_import_wh"] / (p * 60 / 3600) - 1)))
    assert one["windows"] == 60 and close(one["energy_import_wh"], p * 60 / 3600)
    chained = [sim_run(tmp_path, "chain.img", 60) for _ in range(3)]
    long_run = sim_run(tmp_path, "long.img", 180)
    e3, e1 = chained[-1]["energy_import_wh"], long_run["energy_import_wh"]
    print("3 x 60 s chained: %.3f Wh; one 180 s run: %.3f Wh; P*180/3600 = %.3f Wh (chained - long %+.4f %%)"
          % (e3, e1, p * 180 / 3600, 100 * (e3 / e1 - 1)))
    assert [c["t_s"] for c in chained] == [60, 120, 180]
    assert close(e3, e1) and close(e1, long_run["p_w"] * 180 / 3600)
    for k, c in enumerate(chained):
        assert close(c["energy_import_wh"], p * 60 * (k + 1) / 3600), k


def test_power_cuts_with_and_without_the_warning(tmp_path):
    """A short count for make test (the 1,000-cut run is its own target). Both figures are printed."""
    cuts = 12
    warned = powercuts.run_cuts(tmp_path / "warned.img", cuts, hold_up_ms=20.0, checkpoint_s=10, seed=7)
    print(powercuts.summary(warned))
    bare = powercuts.run_cuts(tmp_path / "bare.img", cuts, hold_up_ms=0.0, checkpoint_s=10, seed=7)
    print(powercuts.summary(bare))
    for fig in (warned, bare):
        assert fig["registers_backwards"] == 0 and fig["tamper"] is None
    # with the warning: nothing lost; every acknowledged cut's boot restores the checkpoint it made, within
    # the hold-up (about 6 in 1,000 handlers run out of hold-up after their checkpoint: a 45 ms erase
    # would not fit, so it never starts)
    assert warned["lost_wh"] == 0.0 and warned["acknowledged"] >= cuts - 2
    assert warned["from_cut_checkpoint"] == warned["acknowledged"]
    assert 0 < warned["max_holdup_used_us"] <= 20000
    # without it: what the last checkpoint did not cover, at most one interval (+ a window) per cut
    assert bare["acknowledged"] == 0 and bare["lost_wh"] > 0.0
    assert bare["max_lost_wh"] <= 2300.0 * (10 + 1) / 3600


def _checkpoints_before_boots(board_dir, tmp_path, image="flash.img", keys="keys"):
    out = tmp_path / "export.json"
    r = meterctl("export", "--image", str(board_dir / image), "--key-dir", str(board_dir / keys),
                 "--format", "json", "--out", str(out))
    assert r.returncode == 0, r.stderr
    rows = json.loads(out.read_text())
    rows = rows["records"] if isinstance(rows, dict) else rows
    ends = []  # the newest checkpoint before each later boot, and the last one
    last = None
    for row in rows:
        if row["type"] == "checkpoint":
            last = row
        elif row["type"] == "event" and row["event"] == "boot" and last is not None:
            ends.append(last)
    return ends + [last]


def _wait_status(board_dir, t_s, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            st = json.loads((board_dir / "status.json").read_text())
            if st.get("t_s", 0) >= t_s:
                return st
        except (OSError, ValueError):
            pass
        time.sleep(0.1)
    raise AssertionError("the virtual board did not reach %d simulated s" % t_s)


def test_clean_stops_of_the_virtual_board_checkpoint_everything(tmp_path):
    """machine.reset() (what `mpremote reset` calls), a soft reset (Ctrl-D) and Ctrl-C of `meterctl sim`
    each leave a checkpoint whose registers hold every sample metered: E = P * t within 0.01 % (a
    periodic checkpoint, taken a block after its window's end, would be up to ~0.1 % short)."""
    board_dir = tmp_path / "board"
    (tmp_path / "s.json").write_text(json.dumps(dict(SCENARIO, irms=10.0)))
    env = dict(os.environ, UMETER_SIM_SPEED="20")
    proc = subprocess.Popen([str(Path(sys.executable).with_name("meterctl")), "sim", "--board-dir", "board",
                             "--scenario", "s.json", "--no-display"], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        pty = None
        for line in proc.stdout:
            if line.startswith("virtual board on "):
                pty = line.split()[3]
                break
        _wait_status(board_dir, 25)
        # the board resets under mpremote's feet: its exit status says nothing; the export below does
        subprocess.run([str(Path(sys.executable).with_name("mpremote")), "connect", pty, "resume", "exec",
                        "import machine; machine.reset()"], capture_output=True, text=True, timeout=30)
        (board_dir / "status.json").unlink()
        _wait_status(board_dir, 50)
        fd = os.open(pty, os.O_WRONLY | os.O_NOCTTY)  # Ctrl-D at the idle friendly REPL: soft reset
        os.write(fd, b"\x04")
        os.close(fd)
        (board_dir / "status.json").unlink()
        _wait_status(board_dir, 75)
    finally:
        proc.send_signal(signal.SIGINT)
        rest, err = proc.communicate(timeout=30)
    assert proc.returncode == 0 and "virtual board stopped" in rest, err
    ends = _checkpoints_before_boots(board_dir, tmp_path)
    assert len(ends) == 3, ends  # the ones machine.reset(), the soft reset and Ctrl-C made
    for cp in ends:
        expected = 2300.0 * cp["t_samples"] / RATE / 3600
        print("clean stop at %.2f s: %.3f Wh, P*t = %.4f Wh"
              % (cp["t_samples"] / RATE, cp["1.8.0"], expected))
        assert close(cp["1.8.0"], expected), (cp, expected)


def test_ctrl_c_of_sim_run_checkpoints_everything(tmp_path):
    """Ctrl-C of a headless run: meterctl asks the firmware for a clean stop (it never sees the SIGINT
    itself, so no write is torn), and the image ends with a checkpoint holding every sample."""
    (tmp_path / "s.json").write_text(json.dumps(dict(SCENARIO, irms=10.0)))
    proc = subprocess.Popen([str(Path(sys.executable).with_name("meterctl")), "sim", "run", "--scenario",
                             "s.json", "--seconds", "1e6", "--image", "m.img"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    progress = 0
    for line in proc.stderr:
        progress += line.startswith("sim: ")
        if progress == 2:
            break
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "checkpointed at seq" in err, err
    cp = _checkpoints_before_boots(tmp_path, tmp_path, image="m.img", keys="m.img.keys")[-1]
    expected = 2300.0 * cp["t_samples"] / RATE / 3600
    print("Ctrl-C at %.2f s: %.3f Wh, P*t = %.4f Wh" % (cp["t_samples"] / RATE, cp["1.8.0"], expected))
    assert cp["t_samples"] >= 120 * RATE and close(cp["1.8.0"], expected)
