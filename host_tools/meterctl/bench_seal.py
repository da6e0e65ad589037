"""`make bench-seal`: sealed records per second on the MicroPython unix port, 64-byte payloads.

Compares the keystream paths of firmware/umeter/crypto/seal.py (ECB-encrypted counter blocks with the XOR
in viper, the same in plain Python, and cryptolib's CTR mode where the port has it: not the unix port),
prints the keystream+XOR share on its own, opening (verify + decrypt), the bytes a seal adds per record
and the heap allocated per record.

This one file is both sides: under CPython `main(argv)` starts the unix port on this file; under
MicroPython it runs the measurement. Only figures are printed, nothing is asserted.

Variants: "seal" (sealing only) and "journal" (seal + Journal.append, durable per record, on a 128 KiB
NOR simulator region that wraps many times: ring retention and erases included). `make bench-seal` runs
both. `--short` measures SHORT_RECORDS per figure (a run-to-the-end check for `make test`). A variant
is a function (sealer, count) -> (next_seq(), append(buf, n)), append None for sealing
only.
"""
import sys
import time

PAYLOAD_LEN = 64
DEFAULT_RECORDS = 20000
SHORT_RECORDS = 300
HEAPSIZE = "512K"  # device-like: a large heap would make every collection (sweep) dominate
KEY = bytes(range(32))


class _Ring:
    def master_for(self, epoch):
        return KEY


def _sealing_only(sealer, count):
    # no storage: sequence numbers from a counter, records dropped
    state = [0]

    def next_seq():
        state[0] += 1
        return state[0]

    return next_seq, None


def _journal_backed(sealer, count):
    # the real path: the journal's next seq is the nonce, the sealed record is appended durably
    import gc

    from sim.nor import NorFlash
    from umeter.store.journal import Journal

    gc.collect()  # the previous mode's flash image is garbage by now: free it before the next one
    j = Journal(NorFlash(128 * 1024, seed=1))
    mv = None

    def append(buf, n):
        nonlocal mv
        if mv is None:
            mv = memoryview(buf)
        j.append(mv[:n])

    return (lambda: j.next_seq), append


VARIANTS = {"seal": _sealing_only, "journal": _journal_backed}


def _rate(count, t0):
    dt = time.ticks_diff(time.ticks_us(), t0)
    return count * 1e6 / dt if dt > 0 else float("inf")


def _seal_rate(seal, mode, count, variant):
    import gc

    s = seal.Sealer(_Ring(), 1, ctr=mode)
    payload = bytes((i * 37) & 0xFF for i in range(PAYLOAD_LEN))
    out = bytearray(PAYLOAD_LEN + seal.MAX_OVERHEAD)
    next_seq, append = VARIANTS[variant](s, count)
    n = s.seal_into(next_seq(), payload, out)  # warm-up: derive keys, build the views
    if append is not None:
        append(out, n)
    gc.collect()
    t0 = time.ticks_us()
    for _ in range(count):
        n = s.seal_into(next_seq(), payload, out)
        if append is not None:
            append(out, n)
    return _rate(count, t0)


def _open_rate(seal, mode, count):
    s = seal.Sealer(_Ring(), 1, ctr=mode)
    payload = bytes(PAYLOAD_LEN)
    records = [s.seal(seq, payload) for seq in range(1, 501)]
    out = bytearray(PAYLOAD_LEN)
    rounds = max(1, count // len(records))
    t0 = time.ticks_us()
    for _ in range(rounds):
        op = seal.Opener(_Ring(), ctr=mode)
        for seq, rec in enumerate(records, 1):
            op.open_into(seq, rec, out)
    return _rate(rounds * len(records), t0)


def _keystream_rate(seal, mode, count):
    ctr = seal._Ctr(PAYLOAD_LEN, mode)
    k = seal._Keys(KEY, 1, seal.ALG_DEFAULT)
    src = bytes(PAYLOAD_LEN)
    out = bytearray(PAYLOAD_LEN)
    ctr.crypt(k, 1, src, out, 0, PAYLOAD_LEN)
    t0 = time.ticks_us()
    for seq in range(2, count + 2):
        ctr.crypt(k, seq, src, out, 0, PAYLOAD_LEN)
    return _rate(count, t0)


def _alloc_per_record(seal, mode):
    import gc

    s = seal.Sealer(_Ring(), 1, ctr=mode)
    out = bytearray(PAYLOAD_LEN + seal.MAX_OVERHEAD)
    payload = bytes(PAYLOAD_LEN)
    s.seal_into(1, payload, out)
    s.seal_into(2, payload, out)
    gc.collect()
    gc.disable()
    before = gc.mem_alloc()
    for seq in range(3, 103):
        s.seal_into(seq, payload, out)
    per = (gc.mem_alloc() - before) / 100
    gc.enable()
    return per


def _mp_main(argv):
    from umeter.crypto import seal

    count = int(argv[0]) if argv else DEFAULT_RECORDS
    variant = argv[1] if len(argv) > 1 else "seal"
    modes = [seal.MODE_VIPER, seal.MODE_PYTHON] + ([seal.MODE_NATIVE] if seal.HAS_NATIVE_CTR else [])
    print("Sealed records, MicroPython %s unix port, %d-byte payloads, %d records per figure, variant %r"
          % (".".join(str(v) for v in sys.implementation.version[:3]), PAYLOAD_LEN, count, variant))
    print("(AES-256-CTR + HMAC-SHA256/128; cryptolib CTR mode on this port: %s)"
          % ("yes" if seal.HAS_NATIVE_CTR else "no, ECB fallback"))
    print()
    sealed = "sealed+appended/s" if variant == "journal" else "sealed rec/s"
    print("  %-8s %16s %16s %20s %16s" % ("keystream", sealed, "opened rec/s", "keystream+XOR /s",
                                          "heap B/seal"))
    rates = {}
    for mode in modes:
        rates[mode] = _seal_rate(seal, mode, count, variant)
        print("  %-8s %16.0f %16.0f %20.0f %16.0f" % (
            mode, rates[mode], _open_rate(seal, mode, count), _keystream_rate(seal, mode, count),
            _alloc_per_record(seal, mode)))
    print()
    print("viper vs plain Python: %.2fx records sealed per second"
          % (rates[seal.MODE_VIPER] / rates[seal.MODE_PYTHON]))
    s = seal.Sealer(_Ring(), 1)
    first = s.seal(1, bytes(PAYLOAD_LEN))
    plain = s.seal(2, bytes(PAYLOAD_LEN))
    anchor = s.seal(3, bytes(PAYLOAD_LEN), anchor=True)
    print("Added bytes per record: %d (header %d + tag 16); anchor record %d (+ predecessor tag); "
          "first record of a chain %d" % (len(plain) - PAYLOAD_LEN, seal.HEADER_LEN,
                                          len(anchor) - PAYLOAD_LEN, len(first) - PAYLOAD_LEN))
    print("  = %.0f%% of a %d-byte payload" % (100.0 * (len(plain) - PAYLOAD_LEN) / PAYLOAD_LEN, PAYLOAD_LEN))


def main(argv=None):
    """CPython entry point: run this file on the MicroPython unix port and pass its output through."""
    import argparse
    import os
    import subprocess
    from pathlib import Path

    p = argparse.ArgumentParser(prog="bench seal", description=__doc__.split("\n\n")[0])
    p.add_argument("--records", type=int, default=DEFAULT_RECORDS, help="records per figure")
    p.add_argument("--variant", choices=sorted(VARIANTS) + ["all"], default="all")
    p.add_argument("--short", action="store_true", help="%d records per figure" % SHORT_RECORDS)
    args = p.parse_args(argv or [])
    if args.short:
        args.records = min(args.records, SHORT_RECORDS)
    root = Path(__file__).resolve().parents[2]
    micropython = Path(sys.executable).with_name("micropython")
    env = dict(os.environ)
    env["MICROPYPATH"] = ":".join([".frozen"] + [str(root / d) for d in ("firmware", "host_tools", "boards")])
    rc = 0
    for variant in sorted(VARIANTS) if args.variant == "all" else [args.variant]:
        cmd = [str(micropython), "-X", "heapsize=" + HEAPSIZE, str(Path(__file__).resolve()),
               str(args.records), variant]
        rc = rc or subprocess.run(cmd, env=env, cwd=str(root)).returncode
        print()
    return rc


if __name__ == "__main__":
    if sys.implementation.name == "micropython":
        _mp_main(sys.argv[1:])
    else:
        sys.exit(main(sys.argv[1:]))
