"""``meterctl export``: verify, decrypt and export a meter's sealed records (engine: meterctl.export).

    meterctl export (--image FILE | --port PORT) (--key KEYFILE | --key-dir DIR) [--role-key FILE]
                    [--format csv|json] [--out FILE] [--mark FILE] [--min-seq N] [--board NAME] [--timeout S]
                    [--strict]

With --port the device is read over its raw REPL (a development meter) or, when a role key is given
(--role-key FILE, or the reader.key of a host key directory given as --key-dir) and the port answers the
console protocol, over the console as reader (a production meter). Both read the same summary, records and
high-water mark, and the host verifies them the same way."""
import sys

from meterctl import export as ex
from meterctl import markfile
from meterctl.cli import CliError

EPILOG = """\
columns (CSV header; JSON records use the same keys):
  seq, key_epoch, type (profile | checkpoint | event | unknown),
  profile rows:    t_end_s, minutes, flags, 1.8.0 2.8.0 (active energy import/export in the
                   interval, Wh), 3.8.0 4.8.0 (reactive, varh), 32.3.0 32.5.0 32.6.0 (voltage
                   min/avg/max, V), 1.6.0 (maximum demand, W)
  profile rows also: sat_samples (samples at or beyond the ADC's range; empty in version 1 records)
  checkpoint rows: t_samples (engine time in samples), 1.8.0 2.8.0 3.8.0 4.8.0 (register totals)
  event rows:      event, code, arg, text
  retention rows:  first_dropped, last_dropped, oldest_kept (seqs a ring-retention drop removed, and
                   the oldest record it kept)

both ends are checked: the oldest record must start the chain or be the oldest a sealed retention
record keeps; the newest end is checked against the device's high-water mark: the keystore's with
--key-dir, the device's own with --port, a mark file with --mark (`meterctl sim run` writes IMAGE.mark,
`meterctl mark --port P --out FILE` reads a real device's). Seqs are positional: gaps in seq across
which the chain verifies are normal.

exit status:
  0  every record verified, both ends check (withheld chain heads and slots the journal skipped
     as torn writes are warnings)
  2  bad input: missing or corrupt image, unreadable key or mark file, no port, device not answering
  3  TAMPER: a seal or the chain failed (altered, deleted, reordered, replayed or spliced records),
     records missing or damaged at the oldest end without a retention record covering them, the
     high-water mark's checkpoint missing, replaced or unverifiable, registers below its floors, or
     the journal ending before it (rollback, newest records deleted); with --strict also a tamper
     the meter itself recorded (a tamper event, or an active tamper log in its keystore)
  4  WRONG KEY: the key opens no record, or not whole key epochs at one end (a re-key); never with
     --key-dir and never at or below the high-water mark
  5  INCOMPLETE: only with --strict: slots skipped by the journal CRC, unverifiable records, or no
     high-water mark (give --key-dir, --mark or --port)
Nothing is written unless the status is 0 (the output file is replaced atomically).
Keys are never printed; only their key ids."""


def register(subparsers):
    p = subparsers.add_parser(
        "export", help="verify and decrypt a meter's sealed records, write CSV or JSON",
        description="Read the sealed journal from a flash image file or a device over serial, verify every "
                    "seal and the chain, decrypt and write the records with OBIS-named columns. A device is "
                    "read over its raw REPL (development) or, with a role key (--role-key FILE, or the "
                    "reader.key of a host key directory given as --key-dir), over the console protocol as "
                    "reader (production), chosen automatically; both are verified the same way.",
        epilog=EPILOG, formatter_class=_raw())
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--image", help="flash image file (read-only), e.g. from `meterctl sim run --image`")
    src.add_argument("--port", help="serial port of the device (or the virtual board's pty)")
    key = p.add_mutually_exclusive_group(required=True)
    key.add_argument("--key", help="device master key file (from `meterctl keys new`)")
    key.add_argument("--key-dir", help="keystore directory (virtual board: IMG.keys or BOARD_DIR/keys; its "
                                       "high-water mark is checked too), or a production meter's host key "
                                       "directory (KEYFILES.md: master.key, reader.key)")
    from meterctl.production import add_role_args
    add_role_args(p, key_dir=False)
    p.add_argument("--format", choices=("csv", "json"), default="csv", help="output format (default: csv)")
    p.add_argument("--out", help="output file (default: standard output)")
    p.add_argument("--mark", metavar="FILE",
                   help="the device's high-water mark (JSON: `meterctl sim run` writes IMAGE.mark, `meterctl "
                        "mark --port P --out FILE` reads a device's): the newest end is checked against it")
    p.add_argument("--min-seq", type=int, metavar="N",
                   help="expected high-water mark: fail (rollback) if the newest record is older than seq N")
    p.add_argument("--board", default="sim", help="board whose partition table the image uses (default: sim)")
    p.add_argument("--timeout", type=float, default=10.0,
                   help="seconds of device silence that fail (default: 10)")
    p.add_argument("--strict", action="store_true",
                   help="also fail on skipped or unverifiable records and without a high-water mark "
                        "(status 5) and on a tamper the meter recorded itself (status 3)")
    p.set_defaults(func=run)


def _raw():
    import argparse

    return argparse.RawDescriptionHelpFormatter


def _err(msg):
    print("meterctl export: %s" % msg, file=sys.stderr)


def _progress(done, total):
    if sys.stderr.isatty():
        print("\rreading records: %d/%d" % (done, total), end="" if done < total else "\n",
              file=sys.stderr, flush=True)
    elif done < total:
        print("reading records: %d/%d" % (done, total), file=sys.stderr)


def run(args):
    if args.min_seq is not None and args.min_seq < 1:
        raise CliError("--min-seq must be a positive sequence number")
    if args.out and args.image and _same_file(args.out, args.image):
        raise CliError("--out must not be the image itself")
    if args.image and args.role_key:
        raise CliError("--role-key is for --port (a production meter's console)")
    keys = _keys(args)
    if args.image:
        snap = ex.read_image(args.image, args.board)
    else:
        snap = _read_port(args)
    marks = [markfile.read(args.mark)] if args.mark else []
    if snap.mark is not None:
        marks.append(snap.mark)
    res = ex.verify(snap, keys, min_seq=args.min_seq, marks=marks)
    for line in ex.warnings(snap, res):
        _err("warning: " + line)
    try:
        ex.verdict(res, strict=args.strict)
    except ex.ExportFailure as e:
        _err(str(e))
        return e.code
    text = ex.render(snap, keys, res, args.format)
    if args.out:
        ex.write_atomic(args.out, text)
    else:
        sys.stdout.write(text)
    _err("%d record(s) verified and exported (seq %d..%d, key id %s)%s"
         % (len(res.rows), res.first_seq, res.last_seq, ", ".join(keys.key_ids),
            " to %s" % args.out if args.out else ""))
    return 0


def _keys(args):
    from meterctl import production as prod

    if args.key:
        return ex.keys_from_file(args.key)
    if prod.is_host_key_dir(args.key_dir):  # a production meter's key directory: its master.key
        return ex.keys_from_file(prod.KeyDir(args.key_dir).file(prod.MASTER))
    return ex.keys_from_dir(args.key_dir)


def _read_port(args):
    """The device's snapshot: over the console with a role key and a console answering, else raw REPL."""
    from meterctl import production as prod
    from meterctl.remote import RemoteError, check_port

    check_port(args.port)
    console = prod.console_for(args)
    if console is not None:
        with console as c:
            return prod.read_snapshot(c, args.port, progress=_progress)
    try:
        return ex.read_device(args.port, timeout=args.timeout, progress=_progress)
    except RemoteError:
        if prod.which_mode(args.port) is not None:
            raise CliError("%s speaks the console protocol (a production meter, REPL closed): give its "
                           "reader key with --role-key FILE, or --key-dir DIR holding master.key and "
                           "reader.key (KEYFILES.md)" % args.port) from None
        raise


def _same_file(a, b):
    import os

    try:
        return os.path.samefile(a, b)
    except OSError:
        return False
