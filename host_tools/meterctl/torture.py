"""`python -m meterctl.torture --cuts N [--target journal|state|all]`: the long power-cut run.

Each target is a torture object with round() (one cut, remount, oracle checks; AssertionError on a
violation) and summary() -> {"cuts", "lost", "corrupt", ...}. The journal target is
harness.journal_torture.JournalTorture, the same round the tests run. Other targets are plugged in by
name: a module meterctl.torture_<target>, imported only when that target is asked for, providing
either make(seed) -> torture object, or run(cuts, seed=, progress=) -> {"cuts", "lost", "corrupt", ...}
(progress called with the running counters).
"""
import argparse
import importlib
import sys
import time

from meterctl import mpcompat

mpcompat.install()  # the journal and State under test are the firmware's own modules

TARGETS = ("journal", "state")


def make_target(name, seed, sectors):
    if name == "journal":
        from harness.journal_torture import JournalTorture
        return JournalTorture(seed=seed, sectors=sectors, max_ops=48)
    module = importlib.import_module("meterctl.torture_" + name)   # lazily: only when asked for
    if hasattr(module, "make"):
        return module.make(seed)
    return module


def _line(name, s, cuts, el):
    return ("[%s] %d/%d cuts  lost %d  corrupt %d  %.1f s  (%.0f cuts/s)"
            % (name, s["cuts"], cuts, s["lost"], s["corrupt"], el, s["cuts"] / el if el else 0))


def run(name, cuts, seed, sectors, out=sys.stdout, every=None):
    t = make_target(name, seed, sectors)
    every = every or max(1, cuts // 20)
    start = time.monotonic()
    if not hasattr(t, "round"):               # a module with its own run(cuts, seed=, progress=)
        def progress(c):
            if c["cuts"] % every < 100 or c["cuts"] == cuts:
                print(_line(name, c, cuts, time.monotonic() - start), file=out, flush=True)
        try:
            s = dict(t.run(cuts, seed=seed, progress=progress))
            s["failure"] = None
        except AssertionError as e:
            s = {"cuts": 0, "lost": 0, "corrupt": 0, "failure": str(e)}
        s["time_s"] = round(time.monotonic() - start, 2)
        return s
    failure = None
    try:
        for i in range(cuts):
            t.round()
            if (i + 1) % every == 0 or i + 1 == cuts:
                print(_line(name, t.summary(), cuts, time.monotonic() - start), file=out, flush=True)
    except AssertionError as e:
        failure = str(e)
    s = t.summary()
    s["time_s"] = round(time.monotonic() - start, 2)
    s["failure"] = failure
    return s


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m meterctl.torture", description=__doc__.splitlines()[0])
    ap.add_argument("--cuts", type=int, default=100000, help="power cuts per target (default 100000)")
    ap.add_argument("--target", choices=TARGETS + ("all",), default="journal")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--sectors", type=int, default=12, help="journal ring size in 4 KiB sectors")
    args = ap.parse_args(argv)
    names = TARGETS if args.target == "all" else (args.target,)
    status = 0
    for name in names:
        try:
            s = run(name, args.cuts, args.seed, args.sectors)
        except ImportError as e:
            print("[%s] not available: %s" % (name, e), file=sys.stderr)
            status = 1
            continue
        extra = "  ".join("%s %s" % (k, v) for k, v in sorted(s.items())
                          if k not in ("cuts", "lost", "corrupt", "time_s", "failure", "seconds"))
        print("%s: cuts %d  lost %d  corrupt %d  time %.1f s  %s"
              % (name, s["cuts"], s["lost"], s["corrupt"], s["time_s"], extra))
        if s["failure"] or s["lost"] or s["corrupt"]:
            print("%s: FAILED: %s" % (name, s["failure"]), file=sys.stderr)
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
