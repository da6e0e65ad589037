"""Every `make bench-*` runs to its end (issue 9 item 5): each benchmark's short form, as a subprocess,
exactly as `python -m meterctl.bench NAME --short`. Checked: exit status 0, no traceback, and the lines
that carry its figures are printed. Speed is never asserted (the figures are whatever this host gives)."""
import re
import subprocess
import sys

import pytest

NUMBER = r"\d+(\.\d+)?"

# bench name -> patterns every one of which must match some line of its output
FIGURE_LINES = {
    "flash": [r"W25Q16JV\s+" + NUMBER, r"W25Q128JV\s+" + NUMBER, r"page program 256 B\s+" + NUMBER,
              r"sector erase 4 KB\s+" + NUMBER, r"Driver time-outs: page program \d+ us"],
    "seal": [r"variant 'journal'", r"variant 'seal'", r"viper\s+\d+\s+\d+\s+\d+\s+\d+",
             r"python\s+\d+\s+\d+\s+\d+\s+\d+", r"viper vs plain Python: " + NUMBER + "x",
             r"Added bytes per record: 25 "],
    "memory": [r"== romfs:", r"== files:", r"live heap after \(bytes\)", r"import:umeter\.app\s+\d+",
               r"umeter\.crypto\.seal\s+\d+\s+\d+", r"\.mpy size per module", r"total\s+\d+\s+\d+"],
    "store": [r"journal", NUMBER],
    "metering": [r"pairs", NUMBER],
    "ota": [r"Ed25519", r"LMS", r"ESP32 \(LX6, 240 MHz\)\s+" + NUMBER, r"RP2040"],
    "ota_install": [r"mp64 ed25519 install\s+" + NUMBER, r"boot-stage verify\s+" + NUMBER,
                    r"mp64 lms\s+install"],
}


def run_bench(name):
    proc = subprocess.run([sys.executable, "-m", "meterctl.bench", name, "--short"], capture_output=True,
                          text=True, timeout=300)
    return proc.returncode, proc.stdout + proc.stderr


@pytest.mark.parametrize("name", sorted(FIGURE_LINES))
def test_bench_short_form_runs_to_its_end(name):
    code, out = run_bench(name)
    assert code == 0 and "Traceback" not in out, "bench %s did not run to its end:\n%s" % (name, out[-4000:])
    for pattern in FIGURE_LINES[name]:
        assert re.search(pattern, out), "bench %s printed no line matching %r:\n%s" % (
            name, pattern, out[-4000:])


def test_bench_cli_knows_every_bench_and_refuses_others():
    from meterctl import bench

    assert set(bench.BENCHES) == set(FIGURE_LINES)
    assert bench.main([]) == 2 and bench.main(["nonsense"]) == 2
