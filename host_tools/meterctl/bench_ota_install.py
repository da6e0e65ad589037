"""`python -m meterctl.bench_ota_install [--short]` (wire as `meterctl bench ota-install` / `make bench-ota`):
installing a signed bundle of the whole app into the simulated flash, and the boot stage verifying it.

CPython signs a bundle of the real firmware (firmware/umeter as sources, the sim board.py; arch "py")
with fresh keys (cryptography / pyhsslms), then runs host_tools/harness/ota_install_bench.py on each
MicroPython lane (64-bit unix port, the i386 build when present) over littlefs on the NOR simulator:
install throughput (host time, and the NOR model's busy time), heap allocated, boot-stage verification
time of the whole app per policy, and (full mode) the smallest heap each step completes in: the peak
heap it needs, all modules loaded. Figures and ratios only, nothing asserted.
--short: one lane, ed25519 and LMS H5, no smallest-heap search (a run-to-the-end check)."""
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from meterctl.mpcompat import install as _install_firmware_path
from meterctl.vboard import ROOT, find_micropython

_install_firmware_path()
from umeter.ota import bundle  # noqa: E402

HARNESS = ROOT / "host_tools" / "harness" / "ota_install_bench.py"
MP32 = os.environ.get("UMETER_MICROPYTHON32") or str(ROOT.parent / "shared" / "micropython32" / "micropython")
ISSUED = 1_760_000_000
HEAP_STEPS_KB = (24, 32, 40, 48, 64, 80, 96, 128, 160, 192, 256, 384, 512)


def app_files():
    files = {"board.py": (ROOT / "boards" / "sim" / "board.py").read_bytes()}
    fw = ROOT / "firmware"
    for path in sorted((fw / "umeter").rglob("*.py")):
        files[path.relative_to(fw).as_posix()] = path.read_bytes()
    return files


def _keys(policy, short):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    import pyhsslms

    out = []
    if policy in ("ed25519", "hybrid"):
        k = Ed25519PrivateKey.generate()
        pub = k.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        out.append((bundle.ALG_ED25519, pub, k.sign))
    if policy in ("lms", "hybrid"):
        lms_type = pyhsslms.lms_sha256_m32_h5 if short else pyhsslms.lms_sha256_m32_h10
        k = pyhsslms.LmsPrivateKey(lms_type=lms_type, lmots_type=pyhsslms.lmots_sha256_n32_w4)
        out.append((bundle.ALG_LMS, k.publicKey().serialize(), k.sign))
    return out


def make_bundle(files, keys):
    entries = [(p, len(d), hashlib.sha256(d).digest()) for p, d in files.items()]
    manifest = bundle.encode_manifest(["sim"], "bench", 1, ISSUED, 0xFFFFFFF0, "py", entries)
    msg = bundle.signed_message(manifest)
    sig = bundle.encode_sigblock([(alg, bundle.key_id(alg, pub), sign(msg)) for alg, pub, sign in keys])
    return bundle.encode_header(len(manifest), len(sig)) + manifest + sig + b"".join(files.values())


def _run(binary, args, heap="8M", timeout=600):
    path = ":".join([".frozen", str(ROOT / "firmware"), str(ROOT / "host_tools")])
    proc = subprocess.run([binary, "-X", "heapsize=" + heap, str(HARNESS)] + [str(a) for a in args],
                          capture_output=True, text=True, env=dict(os.environ, MICROPYPATH=path),
                          timeout=timeout, cwd=tempfile.gettempdir())
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        return None
    return json.loads(lines[-1])


def smallest_heap(binary, args, prepare):
    """The smallest heap (KB, of HEAP_STEPS_KB) a step completes in, or None."""
    for kb in HEAP_STEPS_KB:
        prepare()
        if _run(binary, args, heap="%dK" % kb) is not None:
            return kb
    return None


def lanes(short):
    out = [("mp64", find_micropython())]
    if not short and os.path.isfile(MP32) and os.access(MP32, os.X_OK):
        out.append(("mp32", MP32))
    return out


def _write_case(work, policy, files, short):
    keys = _keys(policy, short)
    bpath = work / ("%s.bnd" % policy)
    bpath.write_bytes(make_bundle(files, keys))
    tpath = work / ("%s.json" % policy)
    code = {"ed25519": 1, "lms": 2, "hybrid": 3}[policy]
    tpath.write_text(json.dumps({"board": "sim", "arch": "py", "policy": code, "floor": code,
                                 "keys": [[a, p.hex()] for a, p, _ in keys]}))
    return bpath, tpath


def _report(lane, policy, r, payload):
    kbps = payload / r["host_ms"] * 1000 / 1024
    flash_kbps = payload / r["flash_busy_ms"] * 1000 / 1024 if r["flash_busy_ms"] else 0.0
    print("  %-4s %-7s install %7.1f ms host (%6.1f KB/s; head verify %5.1f ms); NOR model %7.1f ms busy "
          "(%5.1f KB/s, %d B programmed = %.2f x payload, %d erases); boot-stage verify %5.1f ms (min %.1f)"
          % (lane, policy, r["host_ms"], kbps, r["head_verify_ms"], r["flash_busy_ms"], flash_kbps,
             r["flash_bytes_programmed"], r["flash_bytes_programmed"] / payload, r["flash_erases"],
             r["boot_verify_ms_mean"], r["boot_verify_ms_min"]))
    print("  %-4s %-7s on the host filesystem (no NOR simulator): install %.1f ms, boot-stage verify %.1f ms "
          "(min %.1f)" % (lane, policy, r["posix_install_ms"], r["posix_boot_verify_ms_mean"],
                          r["posix_boot_verify_ms_min"]))
    shutil.rmtree(r["posix_dir"], ignore_errors=True)


def _peak_heaps(lane, binary, work, bpath, tpath):
    img, keep = work / "img.bin", work / "img_installed.bin"

    def fresh():
        if img.exists():
            img.unlink()

    inst_kb = smallest_heap(binary, ["install", bpath, tpath, img], fresh)
    fresh()
    _run(binary, ["install", bpath, tpath, img])
    shutil.copy(img, keep)
    boot_kb = smallest_heap(binary, ["boot", bpath, tpath, img], lambda: shutil.copy(keep, img))
    print("  %-4s hybrid  peak heap (smallest -X heapsize that completes; all modules loaded, NOR image in a "
          "file): install %s KB, boot-stage verification %s KB" % (lane, inst_kb, boot_kb))


def _ratios(results, policies):
    for policy in policies:
        a, b = results.get(("mp64", policy)), results.get(("mp32", policy))
        if a and b:
            print("  ratio mp32/mp64 %-7s install %.2f, boot verify %.2f" % (
                policy, b["host_ms"] / a["host_ms"], b["boot_verify_ms_mean"] / a["boot_verify_ms_mean"]))
    e, h = results.get(("mp64", "ed25519")), results.get(("mp64", "hybrid"))
    if e and h:
        print("  ratio hybrid/ed25519 boot verify (mp64): %.2f" % (h["boot_verify_ms_mean"]
                                                                  / e["boot_verify_ms_mean"]))


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    short = "--short" in argv
    files = app_files()
    payload = sum(len(d) for d in files.values())
    print("OTA install + boot-stage verification of the whole app: %d files, %d payload bytes, littlefs on a "
          "2 MiB simulated W25Q NOR, 1 KB chunks" % (len(files), payload))
    policies = ("ed25519", "lms") if short else ("ed25519", "lms", "hybrid")
    work = Path(tempfile.mkdtemp(prefix="ota_bench_"))
    results = {}
    try:
        for policy in policies:
            bpath, tpath = _write_case(work, policy, files, short)
            for lane, binary in lanes(short):
                r = _run(binary, ["all", bpath, tpath])
                if r is None:
                    print("  %s %s: the harness failed" % (lane, policy))
                    continue
                results[(lane, policy)] = r
                _report(lane, policy, r, payload)
                if not short and policy == "hybrid":
                    _peak_heaps(lane, binary, work, bpath, tpath)
        _ratios(results, policies)
        print("  target (issue 13): boot-stage verification of the whole app under 50 ms on the 64-bit port")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
