"""`make bench-store`: our Journal vs MicroPython's littlefs (vfs.VfsLfs2) on a simulated W25Q16JV.

Both run in one MicroPython unix-port process (harness/store_bench.py) on the NOR simulator: 64-byte
records, each durable before the next. Printed: flash bytes programmed per payload byte, sector
erases per 1,000 records, erase count max/mean, modelled busy time per record (datasheet typical),
bytes read by mount, projected years until the first sector reaches 100,000 erases at one record
per second; and mount cost of a full 16 MiB W25Q128JV journal. Appends per second and mount time
are printed for both lanes: the 64-bit unix port and the 32-bit one (31-bit small ints, as on the
boards; ../shared/micropython32/micropython or $UMETER_MICROPYTHON32). Figures only, nothing asserted.
`--short` (for make test) measures fewer records on a 256 KiB ring, same figures.
"""
import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MICROPYTHON = str(Path(sys.executable).with_name("micropython"))
MICROPYTHON32 = os.environ.get("UMETER_MICROPYTHON32") or str(ROOT.parent / "shared" / "micropython32" /
                                                               "micropython")

ROWS = [
    ("prog_per_payload_byte", "flash bytes programmed per payload byte", "%.3f", "<= 1.25"),
    ("erases_per_1000", "sector erases per 1,000 records", "%.1f", "<= 22"),
    ("erase_max_over_mean", "erase count max/mean over the region", "%.3f", "<= 1.1"),
    ("erase_spread", "erase count max - min over the ring", "%d", "<= 1"),
    ("busy_us_per_record", "modelled flash busy time per record (us)", "%.0f", ""),
    ("mount_bytes_read", "bytes read by mount", "%d", ""),
    ("years_to_100k", "years until a sector hits 100k erases @1 rec/s", "%.1f", ">= 20"),
]


def _port(code, heapsize, binary=MICROPYTHON):
    env = dict(os.environ)
    env["MICROPYPATH"] = ":".join([".frozen", str(ROOT / "firmware"), str(ROOT / "host_tools")])
    proc = subprocess.run([binary, "-X", "heapsize=" + heapsize, "-c", code], capture_output=True,
                          text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError("unix-port bench failed:\n" + proc.stdout + proc.stderr)
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


def run_port(records, lfs_records, size_kib, warm, binary=MICROPYTHON, lfs=True):
    # The comparison runs in one process; the 16 MiB image gets its own (a small heap keeps the
    # garbage collector's sweeps, and so the printed host times, representative).
    code = "import harness.store_bench as b; b.journal_2mib(%d, %s, %d)" % (records, warm, size_kib * 1024)
    if lfs:
        code += "; b.littlefs_2mib(%d)" % lfs_records
    lines = _port(code, "12M", binary)
    lines += _port("import harness.store_bench as b; b.journal_16mib_mount()", "8M", binary)
    return {d["name"]: d for d in lines}


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m meterctl.bench store", description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=200000, help="journal records measured (after warm-up)")
    ap.add_argument("--lfs-records", type=int, default=5000, help="littlefs records measured")
    ap.add_argument("--short", action="store_true",
                    help="a quick run (make test): a 256 KiB ring, fewer records")
    args = ap.parse_args(argv)
    size_kib, warm = 2048, "None"
    if args.short:
        args.records, args.lfs_records, size_kib, warm = 3000, 500, 256, "4000"
    print("store bench: %d KiB journal (NOR simulator, W25Q16JV geometry and datasheet typical timing), "
          "64-byte records, durable per record, unix port; littlefs on 2 MiB" % size_kib)
    r = run_port(args.records, args.lfs_records, size_kib, warm)
    ours, lfs = r["journal"], r["littlefs"]
    print("journal: %d records measured after %d warm-up (%.1f ring passes); littlefs: %d after %d"
          % (ours["records"], ours["warmup_records"], ours["ring_passes"], lfs["records"],
             lfs["warmup_records"]))
    print("%-50s %12s %12s %10s  %s" % ("figure", "journal", "littlefs", "ours/lfs", "target"))
    for key, label, fmt, target in ROWS:
        a, b = ours[key], lfs[key]
        ratio = "%.4f" % (a / b) if b else "-"
        print("%-50s %12s %12s %10s  %s" % (label, fmt % a, fmt % b, ratio, target))
    print("%-50s %12.1f %12.1f" % ("host time per append (us, unix port)", ours["host_us_per_append"],
                                    lfs["host_us_per_append"]))
    print("journal capacity: %d records of 64 bytes guaranteed (%d retained now)"
          % (ours["capacity_records"], ours["retained_records"]))
    big = r["journal_16mib"]
    print("W25Q128JV 16 MiB full journal (%d sectors): mount read %d bytes (%.1f KiB, target <= 64 KiB)"
          % (big["sectors"], big["mount_bytes_read"], big["mount_bytes_read"] / 1024))
    lanes = [("mp64", ours, big)]
    if os.path.exists(MICROPYTHON32):
        r32 = run_port(min(args.records, 3000), 0, 256, "4000", MICROPYTHON32, lfs=False)
        lanes.append(("mp32", r32["journal"], r32["journal_16mib"]))
    else:
        print("32-bit lane not run: %s not found (see ../shared/micropython32/README)" % MICROPYTHON32)
    for lane, j, b in lanes:
        print("%s: %.0f appends/s (host), mount of %d KiB %.1f ms, of 16 MiB %.1f ms (%d bytes read)"
              % (lane, j["appends_per_s"], j["device_mib"] * 1024, j["mount_host_ms"], b["mount_host_ms"],
                 b["mount_bytes_read"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
