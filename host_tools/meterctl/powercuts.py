"""Power cuts of the headless virtual board, with and without the power-fail warning, and the energy
they lose (issue 11, item 5). Simulator only.

    python -m meterctl.powercuts --cuts 1000 [--hold-up-ms 20] [--checkpoint-s 10] [--seed 1]

Each boot runs the real firmware (host_tools/vboard/run_meter.py) on one image; after a random number
of simulated seconds (progress lines, one per simulated second) the host cuts: with a hold-up time it
first raises the power-fail input and waits for the meter's acknowledgement (meterctl/powerfail.py),
then SIGKILLs. Loss per cut = the import register the last progress line showed before the cut minus
the register restored at the next boot (the meter keeps metering a few blocks past that line, so this
is a lower bound, exact to a block). With the warning the end figure must also satisfy
energy = P * t (every sample fed is in the registers). Prints one summary line per run."""
import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from meterctl import simapp
from meterctl.powerfail import PowerFailLine

SCENARIO = {"vrms": 230.0, "irms": 10.0, "phase_deg": 0.0, "freq_hz": 50.0, "seed": 3}


class Boot:
    """One firmware process on the image, with its power-fail line."""

    def __init__(self, image, hold_up_ms, checkpoint_s, scenario):
        self.line = PowerFailLine(hold_up_ms)
        self.other = []  # output lines that were not JSON (shown if the boot fails)
        cmd, env = simapp.headless_command(image, json.dumps(scenario), 10 ** 7, progress_s=1,
                                           checkpoint_s=checkpoint_s, workdir=Path(image).parent)
        env.update(self.line.env())
        self.proc = subprocess.Popen(cmd, env=env, cwd=Path(image).parent, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True, pass_fds=self.line.child_fds(),
                                     umask=0o077)
        self.line.started()
        self.boot = self.read()
        if self.boot is None or self.boot.get("event") != "boot":
            self.kill()
            raise RuntimeError("the firmware did not boot: %r; other output: %r"
                               % (self.boot, self.other[-5:]))

    def read(self):
        """The next JSON line; None when the firmware ended. Other lines are kept (self.other)."""
        for line in self.proc.stdout:
            try:
                return json.loads(line)
            except ValueError:
                self.other.append(line.rstrip("\n"))
        return None

    def cut(self):
        """The power-fail warning (if any), then the supply is gone."""
        warned = self.line.warn()
        self.kill()
        return warned

    def kill(self):
        self.proc.kill()
        self.proc.wait()
        self.proc.stdout.close()
        self.line.close()


def run_cuts(image, cuts, hold_up_ms, checkpoint_s=10, seed=1, max_s=25, scenario=SCENARIO):
    """Cut the board `cuts` times; returns a dict of figures (see main)."""
    rng = random.Random(seed)
    lost = []
    acks = []
    backwards = 0
    from_cut_checkpoint = 0  # boots that restored exactly the checkpoint the warning made
    last_seen = prev_restored = None
    other = 0  # non-JSON output lines seen
    t0 = time.monotonic()
    for _ in range(cuts + 1):
        boot = Boot(image, hold_up_ms, checkpoint_s, scenario)
        restored = boot.boot["registers_wh"]["1.8.0"]
        if last_seen is not None:
            lost.append(max(0.0, last_seen - restored))
            if restored < prev_restored:
                backwards += 1
            if acks[-1] is not None and boot.boot["restored_from_seq"] == acks[-1][1]:
                from_cut_checkpoint += 1
        prev_restored = restored
        if len(lost) == cuts:  # the final boot only reads what the last cut left
            final = boot.boot
            boot.kill()
            break
        last_seen = restored
        for _ in range(rng.randint(1, max_s)):
            obj = boot.read()
            if obj is None:
                raise RuntimeError("the firmware ended while metering; other output: %r" % boot.other[-5:])
            last_seen = obj["registers_wh"]["1.8.0"]
        other += len(boot.other)
        warned = boot.cut()
        acks.append(boot.line.last_ack if warned else None)
    used = [a[0] for a in acks if a]
    p_w = scenario["vrms"] * scenario["irms"]  # unity power factor scenario
    return {"cuts": cuts, "hold_up_ms": hold_up_ms, "checkpoint_s": checkpoint_s, "lost_wh": sum(lost),
            "max_lost_wh": max(lost or [0.0]), "acknowledged": len(used),
            "from_cut_checkpoint": from_cut_checkpoint, "max_holdup_used_us": max(used or [0]),
            "registers_backwards": backwards, "final_wh": final["registers_wh"]["1.8.0"],
            "final_t_s": final["t_s"], "p_t_wh": p_w * final["t_s"] / 3600, "tamper": final["tamper"],
            "unacknowledged": len(acks) - len(used) if hold_up_ms > 0 else 0, "other_output": other,
            "host_s": time.monotonic() - t0}


def summary(fig):
    return ("%(cuts)d cuts, hold-up %(hold_up_ms)g ms: lost %(lost_wh).3f Wh in all, at most "
            "%(max_lost_wh).3f Wh per cut (checkpoint every %(checkpoint_s)d s); %(acknowledged)d warnings "
            "acknowledged (%(unacknowledged)d not: the hold-up ran out), %(from_cut_checkpoint)d boots "
            "restored the cut's own checkpoint, longest handling "
            "%(max_holdup_used_us)d simulated us; registers went backwards %(registers_backwards)d times; "
            "end: %(final_wh).3f Wh after %(final_t_s)d metered s (P*t = %(p_t_wh).3f Wh); "
            "%(host_s).1f host s" % fig)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="meterctl.powercuts", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cuts", type=int, default=1000)
    ap.add_argument("--hold-up-ms", type=float, action="append",
                    help="hold-up time (repeatable; default: 20 and 0)")
    ap.add_argument("--checkpoint-s", type=int, default=10)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    ok = True
    for hold_up in args.hold_up_ms or [20.0, 0.0]:
        with tempfile.TemporaryDirectory(prefix="umeter-cuts-") as tmp:
            fig = run_cuts(os.path.join(tmp, "cut.img"), args.cuts, hold_up, args.checkpoint_s, args.seed)
        print(summary(fig), flush=True)
        interval_wh = 2300.0 * (args.checkpoint_s + 2) / 3600
        ok &= fig["registers_backwards"] == 0 and fig["tamper"] is None
        if hold_up > 0:  # a warning whose handler ran out of hold-up after its checkpoint still loses nothing
            ok &= fig["lost_wh"] == 0.0 and fig["from_cut_checkpoint"] == fig["acknowledged"]
        else:
            ok &= fig["max_lost_wh"] <= interval_wh
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
