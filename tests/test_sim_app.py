"""The real firmware on the virtual board, headless (meterctl sim run): readings, records, restarts,
power cuts and a one-hour accelerated run. Everything here is the simulator: the same firmware runs on a
real board, but these figures come from sim.grid and the simulated flash."""
import json
import math
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest
from meterctl import simapp

SCENARIO = {"vrms": 230.0, "irms": 10.0, "phase_deg": 0.0, "freq_hz": 50.0, "noise_lsb": 2, "seed": 5}


def meterctl(*args):
    return subprocess.run([str(Path(sys.executable).with_name("meterctl"))] + list(args),
                          capture_output=True, text=True, timeout=300)


def headless(image, seconds, scenario=SCENARIO, **kw):
    """Run the firmware; returns the list of JSON objects it printed (boot, progress..., result)."""
    cmd, env = simapp.headless_command(image, json.dumps(scenario), seconds, workdir=image.parent, **kw)
    proc = subprocess.run(cmd, env=env, cwd=image.parent, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines()]


def test_readings_and_records_through_meterctl(tmp_path):
    scen = dict(SCENARIO, phase_deg=36.87)  # PF 0.8 inductive
    (tmp_path / "s.json").write_text(json.dumps(scen))
    image = tmp_path / "flash.img"
    scenario = str(tmp_path / "s.json")
    r = meterctl("sim", "run", "--scenario", scenario, "--seconds", "125", "--image", str(image), "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    p_true = 230.0 * 10.0 * math.cos(math.radians(36.87))
    assert abs(out["vrms"] - 230.0) / 230.0 < 0.005
    assert abs(out["irms"] - 10.0) / 10.0 < 0.005
    assert abs(out["p_w"] - p_true) / p_true < 0.005
    assert abs(out["pf"] - 0.8) < 0.005
    assert abs(out["freq_hz"] - 50.0) < 0.01
    # every sample is in the registers (the run ends with a clean stop that books the open window):
    # 125 s at p_true, to the metering accuracy (noisy windows; test_sim_energy.py checks to 0.01 %)
    assert abs(out["energy_import_wh"] / (p_true * 125 / 3600) - 1) < 5e-4
    assert out["energy_export_wh"] == 0.0
    # boot event + checkpoints at 60 s and 120 s + the closing checkpoint
    assert out["records"] == 4 and out["last_seq"] >= 4  # journal revision 3: positional seqs
    assert out["tamper"] is None and out["key_development"] is True
    # continue where the image left off
    r2 = meterctl("sim", "run", "--scenario", scenario, "--seconds", "60", "--image", str(image), "--json")
    out2 = json.loads(r2.stdout.strip().splitlines()[-1])
    assert out2["t_s"] == 185 and out2["last_seq"] > out["last_seq"]
    assert out2["energy_import_wh"] > out["energy_import_wh"] + p_true * 58 / 3600


def test_export_direction_registers(tmp_path):
    out = headless(tmp_path / "f.img", 30, dict(SCENARIO, phase_deg=180.0))[-1]
    assert out["energy_import_wh"] == 0.0
    assert abs(out["energy_export_wh"] - 2300.0 * out["windows"] / 3600) < 2300.0 * 1.5 / 3600


def test_power_cuts_lose_at_most_one_checkpoint_interval(tmp_path):
    """50 random kills of the firmware process: registers never go backwards, a restart loses at most
    the checkpoint interval's energy, and the chain to the high-water mark verifies at every boot."""
    image = tmp_path / "cut.img"
    checkpoint_s = 10
    interval_wh = 2300.0 * (checkpoint_s + 2) / 3600  # + the partial windows around the cut
    rng = random.Random(1234)
    last_restored = 0.0
    metered = 0.0  # the most energy seen metered before a cut
    for cut in range(50):
        cmd, env = simapp.headless_command(image, json.dumps(SCENARIO), 100000, progress_s=2,
                                           checkpoint_s=checkpoint_s, workdir=tmp_path)
        proc = subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=subprocess.PIPE, text=True,
                                umask=0o077)  # as simapp starts it: key files 0600
        boot = json.loads(proc.stdout.readline())
        restored = boot["registers_wh"]["1.8.0"]
        assert boot["tamper"] is None, (cut, boot["tamper"])
        assert restored >= last_restored, "register went backwards at cut %d" % cut
        assert restored >= metered - interval_wh, "cut %d lost %.3f Wh" % (cut, metered - restored)
        last_restored = restored
        deadline = time.monotonic() + rng.uniform(0.05, 0.6)
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if line:
                metered = max(metered, json.loads(line)["registers_wh"]["1.8.0"])
        proc.kill()
        proc.wait()
    assert metered > 2300.0 * 60 / 3600  # the run covered well over a few checkpoint intervals
    # the host verifies every seal and the whole chain of the cut image, and the checkpoints it decrypts
    # never go backwards
    out = tmp_path / "export.json"
    r = meterctl("export", "--image", str(image), "--key-dir", str(image) + ".keys", "--format", "json",
                 "--out", str(out))
    assert r.returncode == 0, r.stderr
    rows = json.loads(out.read_text())
    rows = rows["records"] if isinstance(rows, dict) else rows
    cps = [row["1.8.0"] for row in rows if row["type"] == "checkpoint"]
    assert len(cps) >= 5 and cps == sorted(cps)
    assert sum(1 for row in rows if row["type"] == "event" and row["event"] == "boot") == 50


@pytest.mark.parametrize("bad", ["missing", "not_json", "list"])
def test_sim_run_bad_scenario(tmp_path, bad):
    path = tmp_path / "s.json"
    if bad == "not_json":
        path.write_text("{nope")
    elif bad == "list":
        path.write_text("[1, 2]")
    image = tmp_path / "x.img"
    r = meterctl("sim", "run", "--scenario", str(path), "--seconds", "5", "--image", str(image), "--json")
    assert r.returncode != 0
    assert len(r.stderr.strip().splitlines()) == 1 and "scenario" in r.stderr
    assert not image.exists()


def test_sim_run_rejects_wrong_size_image(tmp_path):
    (tmp_path / "s.json").write_text("{}")
    image = tmp_path / "x.img"
    image.write_bytes(b"\xff" * 1000)
    scenario = str(tmp_path / "s.json")
    r = meterctl("sim", "run", "--scenario", scenario, "--seconds", "5", "--image", str(image))
    assert r.returncode != 0 and "2097152" in r.stderr
    assert image.read_bytes() == b"\xff" * 1000
