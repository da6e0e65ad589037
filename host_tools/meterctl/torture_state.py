"""Power-cut torture of the State store, for `meterctl torture --target state` / `make torture`.

    from meterctl import torture_state
    torture_state.run(cuts, seed=0, progress=None) -> dict(cuts=, lost=, corrupt=, seconds=, ...)

First the exhaustive sweep (a cut at every program/erase of a short workload that starts with the
first format, each followed by a second cut at every one of the next SWEEP_SECOND operations, on
each geometry of SWEEP), then `cuts` random cuts. The round logic is harness/state_torture.py, the
same code the tests run (CPython and the unix port). `progress`, if given, is called every 100
random rounds with the running counters.
"""
import time

from meterctl import mpcompat

mpcompat.install()  # the State under test is the firmware's own module
from harness import state_torture  # noqa: E402


SWEEP = ((2, 1024), (3, 512), (2, 4096))
SWEEP_SECOND = 8


def sweep(seed=0, second=SWEEP_SECOND):
    """The exhaustive sweeps; returns summed counters (sweep_runs, sweep_cuts, lost, corrupt, ...)."""
    out = {"sweep_runs": 0, "sweep_cuts": 0, "lost": 0, "corrupt": 0, "first_format_cuts": 0,
           "cuts_in_mount": 0, "failed_at": None}
    for sectors, ss in SWEEP:
        s = state_torture.sweep(sectors=sectors, sector_size=ss, second=second, seed=seed)
        out["sweep_runs"] += s["runs"]
        out["sweep_cuts"] += s["cuts"]
        for k in ("lost", "corrupt", "first_format_cuts", "cuts_in_mount"):
            out[k] += s[k]
        out["lost"] += s["uncut_runs"]
        out["corrupt"] += 0 if s["guards_blank"] else 1
        out["failed_at"] = out["failed_at"] or s["failed_at"]
    return out


def run(cuts, seed=0, progress=None, sweep_second=SWEEP_SECOND, **geometry):
    t0 = time.perf_counter()
    sw = sweep(seed, sweep_second)
    r = state_torture.run(cuts, seed=seed, progress=progress, **geometry)
    r["lost"] += sw["lost"]
    r["corrupt"] += sw["corrupt"]
    r["first_format_cuts"] += sw["first_format_cuts"]
    for k in ("sweep_runs", "sweep_cuts", "cuts_in_mount", "failed_at"):
        r[k] = sw[k]
    r["seconds"] = round(time.perf_counter() - t0, 3)
    return r


def main(argv=None):
    import argparse

    p = argparse.ArgumentParser(prog="python -m meterctl.torture_state")
    p.add_argument("--cuts", type=int, default=10000)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    r = run(a.cuts, a.seed, progress=lambda c: print("  cuts %(cuts)d lost %(lost)d corrupt %(corrupt)d" % c))
    print("state torture: sweep %(sweep_cuts)d cuts in %(sweep_runs)d runs, then %(cuts)d random cuts; "
          "lost %(lost)d corrupt %(corrupt)d time %(seconds).1fs" % r)
    return 0 if r["lost"] == 0 and r["corrupt"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
