"""`python -m meterctl.bench NAME [args]` runs the benchmark module meterctl.bench_NAME (its main()).
`python -m meterctl.bench all [--short]` runs every benchmark in turn (--short: each one's short form,
the run-to-the-end check `make test` does); the status is the first non-zero one."""
import importlib
import sys

BENCHES = ("flash", "store", "metering", "seal", "memory", "ota", "ota_install")


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in BENCHES + ("all",):
        print("usage: python -m meterctl.bench {%s,all} [--short] [args]" % ",".join(BENCHES),
              file=sys.stderr)
        return 2
    if argv[0] == "all":
        rc = 0
        for name in BENCHES:
            print("=== bench %s ===" % name, flush=True)
            rc = rc or _run(name, argv[1:])
        return rc
    return _run(argv[0], argv[1:])


def _run(name, args):
    module = importlib.import_module("meterctl.bench_" + name)
    return module.main(list(args)) or 0


if __name__ == "__main__":
    sys.exit(main())
