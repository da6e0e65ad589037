"""``meterctl mark``: save a device's high-water mark to a mark file (meterctl.markfile), so that
`meterctl export --image IMG --key KEY --mark FILE` can check a flash image read out later (with a clip)
against what the meter's MCU-internal storage says.

    meterctl mark (--port PORT | --key-dir DIR) --out FILE [--timeout S]"""
import sys

from meterctl import markfile
from meterctl.cli import CliError


def register(subparsers):
    p = subparsers.add_parser(
        "mark", help="save a device's high-water mark (seq, key epoch, tag, register floors) to a file",
        description="Read the high-water mark from a running device's keystore over serial (raw REPL, the "
                    "meter keeps running) or from a virtual board's key directory, and write it as a mark "
                    "file for `meterctl export --mark`. Nothing secret is read or written.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--port", help="serial port of the device (or the virtual board's pty)")
    src.add_argument("--key-dir", help="keystore directory (virtual board: IMG.keys or BOARD_DIR/keys)")
    p.add_argument("--out", required=True, help="mark file to write (replaced atomically)")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds of device silence that fail")
    p.set_defaults(func=run)


def run(args):
    if args.port:
        from meterctl.remote import Remote

        with Remote(args.port, timeout=args.timeout) as dev:
            mark = markfile.read_device(dev, args.port)
    else:
        from pathlib import Path

        if not Path(args.key_dir).is_dir():
            raise CliError("key directory %s does not exist" % args.key_dir)
        mark = markfile.from_keys_dir(args.key_dir)
    if mark is None:
        raise CliError("%s holds no high-water mark yet (no checkpoint since provisioning)"
                       % (args.port or args.key_dir))
    if mark.problem:
        raise CliError(mark.problem + ": treat this meter as tampered; nothing written")
    markfile.write(args.out, mark)
    print("meterctl mark: seq %d, key epoch %d, %d register floor(s) written to %s%s"
          % (mark.seq, mark.epoch, len(mark.registers), args.out,
             "; the device reports active tamper" if mark.tamper and mark.tamper.get("active") else ""),
          file=sys.stderr)
    return 0
