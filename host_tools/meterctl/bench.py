"""`python -m meterctl.bench NAME` runs the benchmark module meterctl.bench_NAME (its main())."""
import importlib
import sys


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        print("usage: python -m meterctl.bench {flash,store,metering,seal} [args]", file=sys.stderr)
        return 2
    module = importlib.import_module("meterctl.bench_" + argv[0])
    return module.main(argv[1:]) or 0


if __name__ == "__main__":
    sys.exit(main())
