"""Power-cut torture of the State store, for `meterctl torture --target state` / `make torture`.

    from meterctl import torture_state
    torture_state.run(cuts, seed=0, progress=None) -> dict(cuts=, lost=, corrupt=, seconds=, ...)

The round logic is harness/state_torture.py, the same code the tests run (CPython and the unix port).
`progress`, if given, is called every 100 rounds with the running counters.
"""
import time

from meterctl import mpcompat

mpcompat.install()  # the State under test is the firmware's own module
from harness import state_torture  # noqa: E402


def run(cuts, seed=0, progress=None, **geometry):
    t0 = time.perf_counter()
    r = state_torture.run(cuts, seed=seed, progress=progress, **geometry)
    r["seconds"] = round(time.perf_counter() - t0, 3)
    return r


def main(argv=None):
    import argparse

    p = argparse.ArgumentParser(prog="python -m meterctl.torture_state")
    p.add_argument("--cuts", type=int, default=10000)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    r = run(a.cuts, a.seed, progress=lambda c: print("  cuts %(cuts)d lost %(lost)d corrupt %(corrupt)d" % c))
    print("state torture: cuts %(cuts)d lost %(lost)d corrupt %(corrupt)d time %(seconds).1fs" % r)
    return 0 if r["lost"] == 0 and r["corrupt"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
