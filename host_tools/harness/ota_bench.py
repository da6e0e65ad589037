"""OTA benchmark workloads, run on the MicroPython unix port (either lane) by meterctl.bench_ota.

One function per figure; each takes the cases file written by the host front (keys, messages and
signatures made with cryptography / pyhsslms) and returns a dict, which run() prints as one JSON line.
Other figures (install throughput, boot-stage verification, peak heap) are added the same way: a
function here and a name in FIGURES. Host time only; nothing asserted.
"""
import gc
import json
import time
from binascii import unhexlify

P25519 = 2 ** 255 - 19


def load_cases(path):
    with open(path) as f:
        raw = json.load(f)
    return {name: [[unhexlify(x) for x in case] for case in cases] for name, cases in raw.items()}


def _timed(fn, cases, rounds):
    """Mean and least ms of fn(*case) over rounds passes of cases, and whether every call returned a
    true value."""
    ok = all(fn(*case) for case in cases)          # warm-up, and the verdict
    best = None
    total = 0
    n = 0
    for _ in range(rounds):
        for case in cases:
            gc.collect()
            t0 = time.ticks_us()
            fn(*case)
            dt = time.ticks_diff(time.ticks_us(), t0)
            total += dt
            n += 1
            best = dt if best is None or dt < best else best
    return {"ms_mean": total / n / 1000, "ms_min": best / 1000, "all_valid": ok,
            "verifications": n}


def fig_ed25519(cases, rounds):
    from umeter.crypto import ed25519
    out = _timed(ed25519.verify, cases["ed25519"], rounds)
    out["message_bytes"] = len(cases["ed25519"][0][1])
    return out


def _lms(cases, name, rounds):
    from umeter.crypto import lms
    out = _timed(lms.verify, cases[name], rounds)
    costs = [lms.verify_with_cost(*case)[1] for case in cases[name]]
    out["compressions_mean"] = sum(costs) / len(costs)
    out["compressions_min"] = min(costs)
    out["compressions_max"] = max(costs)
    out["messages"] = len(costs)
    out["signature_bytes"] = len(cases[name][0][2])
    out["types"] = list(lms.public_key_info(cases[name][0][0]))
    return out


def fig_lms_w4(cases, rounds):
    return _lms(cases, "lms_w4", rounds)


def fig_lms_w8(cases, rounds):
    return _lms(cases, "lms_w8", rounds)


def _best_us(step, batch, repeats=7):
    """Least time per call of step() over repeats batches (the least disturbed by other load)."""
    best = None
    for _ in range(repeats):
        t0 = time.ticks_us()
        for _ in range(batch):
            step()
        dt = time.ticks_diff(time.ticks_us(), t0) / batch
        best = dt if best is None or dt < best else best
    return best


def fig_sha256_step(cases, rounds):
    """One Winternitz chain step as lms.py does it (55-byte input, new hash object, digest), and the
    bare compression (many blocks through one object)."""
    import hashlib
    buf = bytearray(55)
    block = bytes(4096)

    def step():
        buf[23:] = hashlib.sha256(buf).digest()

    def bulk():
        hashlib.sha256(block).digest()

    return {"us_per_step": _best_us(step, 500), "us_per_compression_bulk": _best_us(bulk, 20) / 65}


def fig_sha512_block(cases, rounds):
    """Per 128-byte block: the viper compression the device uses, and its plain-Python twin."""
    from umeter.crypto import sha512
    data = bytes(128 * 64)
    short = bytes(128 * 7)

    def plain():
        sha512.SHA512(short, compress=sha512._compress_py).digest()

    return {"us_per_block": _best_us(lambda: sha512.SHA512(data).digest(), 5) / 65,
            "us_per_block_plain": _best_us(plain, 1, repeats=3) / 8}


def fig_bigint_mulmod(cases, rounds):
    """a * b % p on 255-bit ints, the step Ed25519's point arithmetic repeats ~3,800 times."""
    state = [P25519 - 12345678901234567]
    b = P25519 // 3

    def step():
        state[0] = state[0] * b % P25519

    return {"us_per_mulmod": _best_us(step, 500)}


def one_verification(case_dir, name, verify):
    """Import the verifier and read one case (raw files NAME.pk, NAME.msg, NAME.sig: one allocation
    each); with verify, also run it. meterctl.bench_ota finds the least -X heapsize in which each
    variant completes: the difference is the verification's own peak."""
    case = []
    for part in ("pk", "msg", "sig"):
        with open("%s/%s.%s" % (case_dir, name, part), "rb") as f:
            case.append(f.read())
    if name == "ed25519":
        from umeter.crypto.ed25519 import verify as fn
    else:
        from umeter.crypto.lms import verify as fn
    gc.collect()
    if verify and not fn(*case):
        raise SystemExit("verification failed")
    print("done")


FIGURES = {
    "ed25519": fig_ed25519,
    "lms_w4": fig_lms_w4,
    "lms_w8": fig_lms_w8,
    "sha256_step": fig_sha256_step,
    "sha512_block": fig_sha512_block,
    "bigint_mulmod": fig_bigint_mulmod,
}


def run(cases_path, names, rounds):
    cases = load_cases(cases_path)
    for name in names:
        out = FIGURES[name](cases, rounds)
        out["name"] = name
        print(json.dumps(out))
