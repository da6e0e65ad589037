"""`python -m meterctl.torture --cuts N [--target journal|state|all] [--jobs 2]`: the long power-cut run.

Each target is a torture object with round() (one cut, remount, oracle checks; AssertionError on a
violation) and summary() -> {"cuts", "lost", "corrupt", ...}. The journal target is
harness.journal_torture.JournalTorture, the same round the tests run, on rings of 2, 3, 5 and
--sectors sectors in turn (a fresh device every 10,000 cuts; every other lap with an on_drop callback
that appends a retention record), with a failing-chip and a bit-rot pass per ring; --jobs worker
processes share the cuts (one core each). Other targets are plugged in by name: a module
meterctl.torture_<target>, imported only when that target is asked for, providing either
make(seed) -> torture object, or run(cuts, seed=, progress=) -> {"cuts", "lost", "corrupt", ...}
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


RINGS = (2, 3, 5)
CHUNK = 10000


def _max_ops(sectors):
    return 8 * sectors + 8


def _journal_worker(wid, rounds, seed, sectors, q):
    """One process's share of the journal cuts; puts ("p", wid, done) now and then, then ("r", wid, dict)."""
    from harness.journal_torture import JournalTorture, bit_rot, failing_chip
    rings = RINGS + (sectors,)
    tot = {"cuts": 0, "lost": 0, "corrupt": 0, "appended": 0, "brownouts": 0, "erase_cuts": 0, "drops": 0,
           "failing_chip_errors": 0, "failure": None}
    k = 0
    try:
        while tot["cuts"] < rounds:
            ring = rings[(wid + k) % len(rings)]
            t = JournalTorture(seed=seed * 7919 + wid * 104729 + k, sectors=ring, max_ops=_max_ops(ring),
                               retention=(k // len(rings)) % 2 == 1)     # every other lap: with on_drop
            n = min(CHUNK, rounds - tot["cuts"])
            for i in range(n):
                t.round()
                if (i + 1) % 250 == 0:
                    q.put(("p", wid, tot["cuts"] + i + 1))
            s = t.summary()
            for key in ("cuts", "lost", "corrupt", "appended", "brownouts", "erase_cuts", "drops"):
                tot[key] += s[key]
            tot["failing_chip_errors"] += failing_chip(seed=seed + k, sectors=ring)
            bit_rot(seed=seed + k, sectors=ring, rounds=2)
            k += 1
    except AssertionError as e:
        tot["failure"] = "worker %d: %s" % (wid, e)
    q.put(("r", wid, tot))


def run_journal(cuts, seed, sectors, jobs, out=sys.stdout, every=None):
    import multiprocessing as mp
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    shares = [cuts // jobs + (1 if i < cuts % jobs else 0) for i in range(jobs)]
    procs = [ctx.Process(target=_journal_worker, args=(i, shares[i], seed, sectors, q)) for i in range(jobs)]
    start = time.monotonic()
    for p in procs:
        p.start()
    every = every or max(250, cuts // 20)
    done = [0] * jobs
    results = {}
    shown = 0
    while len(results) < jobs:
        kind, wid, val = q.get()
        if kind == "p":
            done[wid] = val
        else:
            results[wid] = val
            done[wid] = val["cuts"]
        total = sum(done)
        if total - shown >= every or len(results) == jobs:
            shown = total
            s = {"cuts": total, "lost": sum(r["lost"] for r in results.values()),
                 "corrupt": sum(r["corrupt"] for r in results.values())}
            print(_line("journal", s, cuts, time.monotonic() - start), file=out, flush=True)
    for p in procs:
        p.join()
    s = {}
    for r in results.values():
        for key, v in r.items():
            if key != "failure":
                s[key] = s.get(key, 0) + v
    fails = [r["failure"] for r in results.values() if r["failure"]]
    s["failure"] = "; ".join(fails) if fails else None
    s["jobs"] = jobs
    s["time_s"] = round(time.monotonic() - start, 2)
    return s


def _line(name, s, cuts, el):
    return ("[%s] %d/%d cuts  lost %d  corrupt %d  %.1f s  (%.0f cuts/s)"
            % (name, s["cuts"], cuts, s["lost"], s["corrupt"], el, s["cuts"] / el if el else 0))


def run(name, cuts, seed, sectors, out=sys.stdout, every=None, jobs=1):
    if name == "journal" and jobs > 1:
        return run_journal(cuts, seed, sectors, jobs, out, every)
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
    ap.add_argument("--sectors", type=int, default=12, help="largest journal ring, in 4 KiB sectors")
    ap.add_argument("--jobs", type=int, default=None,
                    help="journal worker processes (default: 2 from 2,000 cuts on, else 1)")
    args = ap.parse_args(argv)
    names = TARGETS if args.target == "all" else (args.target,)
    status = 0
    for name in names:
        try:
            jobs = args.jobs or (2 if args.cuts >= 2000 else 1)
            s = run(name, args.cuts, args.seed, args.sectors, jobs=jobs)
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
