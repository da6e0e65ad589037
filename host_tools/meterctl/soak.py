"""`make soak HOURS=24`: the real firmware on the virtual board for HOURS simulated hours at the board's
real sample rate, in accelerated time. Prints heap free (after gc) over time, windows, faults, records,
and the simulated-seconds-per-host-second figure. Simulator only."""
import argparse
import json
import sys
import tempfile
from pathlib import Path

from meterctl import simapp
from meterctl.cli import CliError

SCENARIO = {"vrms": 230.0, "irms": 7.5, "phase_deg": 25.0, "noise_lsb": 2,
            "harmonics": [[3, 1.0, 20.0], [5, 0.5, 10.0]], "seed": 11}


def main(argv=None):
    ap = argparse.ArgumentParser(prog="meterctl.soak", description=__doc__)
    ap.add_argument("--hours", type=float, default=24.0)
    args = ap.parse_args(argv)
    seconds = int(args.hours * 3600)
    mem = []

    def progress(obj):
        mem.append(obj["mem_free"])
        print("t=%6.2f h  windows=%d  records=%d  mem_free=%d  import=%.1f Wh"
              % (obj["t_s"] / 3600, obj["windows"], obj["records"], obj["mem_free"],
                 obj["registers_wh"]["1.8.0"]), flush=True)

    with tempfile.TemporaryDirectory(prefix="umeter-soak-") as tmp:
        try:
            result = simapp.stream_headless(Path(tmp) / "soak.img", json.dumps(SCENARIO), seconds, tmp,
                                            progress_s=600, on_progress=progress)
        except CliError as e:
            print("soak: %s" % e, file=sys.stderr)
            return 1
        except KeyboardInterrupt:  # the firmware was stopped cleanly (simapp.stream_headless)
            print("soak: interrupted after %d progress lines" % len(mem), file=sys.stderr)
            return 130
    print("simulated %d s in %.1f host s: %.1f simulated s per host s" % (seconds, result["host_s"],
                                                                         result["sim_s_per_host_s"]))
    print("windows %d (expected about %d), faults %d, records %d, mem_free min/max %d/%d (drift %d bytes)"
          % (result["windows"], seconds, result["faults"], result["records"], min(mem or [0]),
             max(mem or [0]), (mem[0] - mem[-1]) if mem else 0))
    return 0 if result["faults"] == 0 and result["windows"] >= seconds - 2 else 1


if __name__ == "__main__":
    sys.exit(main())
