"""The power-fail input: every real board wires one by default (on a pin nothing else uses, with an
internal pull-up), and the interactive virtual board raises it before each power cut, so every boot
restores a checkpoint that holds every sample metered before the cut."""
import ast
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from meterctl.vboard import VirtualBoard

ROOT = Path(__file__).resolve().parents[1]
REAL_BOARDS = ["esp32_devkitc", "rp2040_pico", "esp32_atm90e32"]
# pins a power-fail input must avoid: ESP32 input-only pins without pull-ups (34-39) and strapping pins;
# the Pico's pins wired on the board itself (GP23 SMPS mode, GP24 VBUS sense, GP25 LED, GP29 VSYS/3)
AVOID = {"xtensawin": {0, 2, 5, 12, 15, 34, 35, 36, 37, 38, 39}, "armv6m": {23, 24, 25, 29}}


def board_constants(name):
    tree = ast.parse((ROOT / "boards" / name / "board.py").read_text())
    consts = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant):
            for t in node.targets:
                if isinstance(t, ast.Name):
                    consts[t.id] = node.value.value
    used = set()  # every pin number the board passes to Pin(), the ADC backends or as sck=/mosi=/...
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            fn = getattr(node.func, "id", getattr(node.func, "attr", ""))
            args = list(node.args) + [k.value for k in node.keywords if k.arg in ("v_pin", "i_pin")]
            if fn in ("Pin", "AdcRp2", "AdcEsp32"):
                used |= {a.value for a in args if isinstance(a, ast.Constant) and isinstance(a.value, int)}
    return consts, used


@pytest.mark.parametrize("name", REAL_BOARDS)
def test_every_real_board_wires_a_power_fail_input(name):
    consts, used = board_constants(name)
    pin = consts["POWER_FAIL_PIN"]
    assert isinstance(pin, int), "%s has no power-fail input by default" % name
    assert pin not in used, "%s: power-fail pin %d is already used (%s)" % (name, pin, sorted(used))
    assert pin not in AVOID[consts["ARCH"]]
    assert "power_fail_input(POWER_FAIL_PIN" in (ROOT / "boards" / name / "board.py").read_text()


def _status(board_dir):
    try:
        return json.loads((board_dir / "status.json").read_text())
    except (OSError, ValueError):
        return None


def _wait_t(board_dir, t_s, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = _status(board_dir)
        if st is not None and st.get("t_s", 0) >= t_s:
            return st
        time.sleep(0.05)
    raise AssertionError("the virtual board did not reach %d simulated s" % t_s)


def test_interactive_power_cuts_with_the_warning_restore_everything(tmp_path):
    board_dir = tmp_path / "board"
    env = {"UMETER_SIM_SPEED": "20", "UMETER_SIM_SCENARIO_JSON": json.dumps({"vrms": 230.0, "irms": 10.0})}
    events = []
    with VirtualBoard(board_dir, heapsize="24M", env=env, log=events.append, hold_up_ms=20.0) as vb:
        t = 0
        for _ in range(3):
            t = _wait_t(board_dir, t + 8)["t_s"]
            (board_dir / "status.json").unlink()
            vb.power_cut()
        _wait_t(board_dir, t + 3)
    assert sum("power cut" in e for e in events) == 3, events
    out = tmp_path / "x.json"
    r = subprocess.run([str(Path(sys.executable).with_name("meterctl")), "export",
                        "--image", str(board_dir / "flash.img"), "--key-dir", str(board_dir / "keys"),
                        "--format", "json", "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    rows = json.loads(out.read_text())
    rows = rows["records"] if isinstance(rows, dict) else rows
    kinds = [(row["type"], row.get("event")) for row in rows]
    assert kinds.count(("event", "power_fail")) == 3 and kinds.count(("event", "boot")) == 4
    last = None
    for row in rows:  # the checkpoint each boot restores holds every sample metered before the cut
        if row["type"] == "checkpoint":
            last = row
        elif row.get("event") == "boot" and last is not None:
            expected = 2300.0 * last["t_samples"] / 4000 / 3600
            print("cut at %.2f s: %.3f Wh checkpointed, P*t = %.4f Wh"
                  % (last["t_samples"] / 4000, last["1.8.0"], expected))
            assert abs(last["1.8.0"] - expected) <= expected * 1e-4 + 1e-3
    assert rows[-1]["type"] == "checkpoint"  # stop() is a clean stop
