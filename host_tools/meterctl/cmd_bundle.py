"""``meterctl bundle``: signed update bundles (firmware/umeter/ota/BUNDLE.md).

    meterctl bundle build --board B --version V --counter N [--expires WHEN] --out FILE   unsigned bundle
    meterctl bundle sign --key FILE [--key FILE2] IN -o OUT      add signatures (hybrid: one of each)
    meterctl bundle verify --pubkey FILE... [--policy P] BUNDLE   check as a device would; exit 2 + reason
    meterctl bundle show BUNDLE                                   fields, software id, signatures, files
"""
import calendar
import sys
import time

from meterctl import boards
from meterctl import bundle as host_bundle
from meterctl import signing_keys
from meterctl.cli import CliError
from meterctl.cmd_keys import tree_progress
from meterctl.mpcompat import install as _install_firmware_path

_install_firmware_path()
from umeter.ota import bundle as fmt  # noqa: E402

DEFAULT_LIFETIME_DAYS = 365


def register(subparsers):
    p = subparsers.add_parser("bundle", help="build, sign, verify and show update bundles",
                              description="Signed update bundles: a manifest naming every file by size and "
                                          "SHA-256, Ed25519 and/or LMS signatures over it, then the files.")
    sub = p.add_subparsers(dest="bundle_command", metavar="{build,sign,verify,show}")
    sub.required = True

    b = sub.add_parser("build", help="compile the firmware for a board into an unsigned bundle")
    b.add_argument("--board", required=True, help="board name (boards/<name>/board.py)")
    b.add_argument("--version", required=True, help="app version shown on the device, e.g. 1.4.0")
    b.add_argument("--counter", required=True, type=int, help="security counter (devices refuse lower ones)")
    b.add_argument("--issued", help="issue time: Unix seconds or YYYY-MM-DD (default: now)")
    b.add_argument("--expires", default="+%dd" % DEFAULT_LIFETIME_DAYS,
                   help="expiry: Unix seconds, YYYY-MM-DD or +<days>d after issue (default: +%dd)"
                        % DEFAULT_LIFETIME_DAYS)
    b.add_argument("--policy", choices=sorted(host_bundle.POLICY_NEEDS), help="new device policy to set")
    b.add_argument("--add-key", action="append", default=[], metavar="PUBFILE", help="trust this key")
    b.add_argument("--revoke-key", action="append", default=[], metavar="PUBFILE", help="revoke this key")
    b.add_argument("--firmware", default=str(host_bundle.deploy.FIRMWARE_DIR), help="firmware directory")
    b.add_argument("--out", required=True, help="bundle file to write")
    b.set_defaults(func=run_build)

    s = sub.add_parser("sign", help="add signatures to a bundle")
    s.add_argument("--key", action="append", required=True, metavar="FILE",
                   help="signing key file (meterctl keys new --alg ...); repeat for hybrid")
    s.add_argument("input", metavar="IN", help="bundle to sign")
    s.add_argument("-o", "--out", required=True, help="signed bundle to write (may be IN)")
    s.set_defaults(func=run_sign)

    v = sub.add_parser("verify", help="verify a bundle's signatures, lengths and file hashes")
    v.add_argument("--pubkey", action="extend", nargs="+", required=True, metavar="FILE",
                   help="trusted public key files (.pub, or private key files)")
    v.add_argument("--policy", choices=sorted(host_bundle.POLICY_NEEDS),
                   help="also require the signatures this policy needs")
    v.add_argument("bundle", nargs="?", help="bundle file (after --pubkey A B, the last name is the bundle)")
    v.set_defaults(func=run_verify)

    w = sub.add_parser("show", help="print a bundle's fields, software id and files")
    w.add_argument("bundle", help="bundle file")
    w.set_defaults(func=run_show)


def parse_time(text, base=None):
    """Unix seconds from '1767225600', '2027-01-01' (00:00 UTC) or '+30d' (days after base)."""
    text = text.strip()
    try:
        if text.startswith("+") and text.endswith("d") and base is not None:
            return base + int(text[1:-1]) * 86400
        if text.isdigit():
            return int(text)
        return calendar.timegm(time.strptime(text, "%Y-%m-%d"))
    except ValueError:
        pass
    raise CliError("cannot read time %r: use Unix seconds, YYYY-MM-DD or +<days>d" % text)


def _read(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise CliError("cannot read %s: %s" % (path, e.strerror or e)) from None


def _write(path, data):
    try:
        host_bundle.write_file(path, data)
    except OSError as e:
        raise CliError("cannot write %s: %s" % (path, e.strerror or e)) from None


def _public_keys(paths):
    try:
        return [signing_keys.read_public(p) for p in paths]
    except signing_keys.SigningKeyError as e:
        raise CliError(str(e)) from None


def run_build(args):
    board = boards.get(args.board)
    issued = parse_time(args.issued) if args.issued else int(time.time())
    expires = parse_time(args.expires, base=issued)
    key_ops = [(fmt.KEY_ADD, alg, pub) for alg, pub in _public_keys(args.add_key)]
    key_ops += [(fmt.KEY_REVOKE, alg, pub) for alg, pub in _public_keys(args.revoke_key)]
    policy = {v: k for k, v in fmt.POLICY_NAMES.items()}[args.policy] if args.policy else None
    arch = board.arch or "py (sources)"
    print("building the app for board %s, arch %s ..." % (board.name, arch), file=sys.stderr, flush=True)
    try:
        data = host_bundle.build(board, args.version, args.counter, issued, expires, policy=policy,
                                 key_ops=key_ops, firmware_dir=args.firmware)
    except fmt.BundleError as e:
        raise CliError(str(e)) from None
    _write(args.out, data)
    b = host_bundle.read(data)
    print("wrote %s: unsigned bundle, %d files, %d bytes; software id %s"
          % (args.out, len(b.manifest.files), len(data), fmt.software_id(b.manifest_bytes)))
    return 0


def _report_signed(key, left):
    if left is None:
        print("signed with %s key %s" % ("ed25519", key.key_id.hex()))
        return
    print("signed with lms key %s (%d of %d one-time signatures left)" % (key.key_id.hex(), left, key.total))
    if left == 0:
        print("warning: LMS key %s is now exhausted: rotate in a new key with the next bundle" % key.path,
              file=sys.stderr)
    elif left < key.total * signing_keys.WARN_FRACTION:
        print("warning: LMS key %s has only %d of %d signatures left: rotate in a new key soon"
              % (key.path, left, key.total), file=sys.stderr)


def run_sign(args):
    data = _read(args.input)
    try:
        keys = [signing_keys.load(p) for p in args.key]
        for key in keys:
            if key.alg == fmt.ALG_LMS:
                print("loading LMS key %s (%s: computing %d leaves) ..."
                      % (key.key_id.hex(), key.describe(), key.total), file=sys.stderr, flush=True)
                key.tree(progress=tree_progress)
        signed = host_bundle.sign(data, keys, on_signed=_report_signed)
    except (signing_keys.SigningKeyError, fmt.BundleError) as e:
        raise CliError(str(e)) from None
    _write(args.out, signed)
    print("wrote %s" % args.out)
    return 0


def run_verify(args):
    pubkeys, bundle_path = list(args.pubkey), args.bundle
    if bundle_path is None:      # `--pubkey A B BUNDLE`: argparse gave the bundle to --pubkey
        if len(pubkeys) < 2:
            raise CliError("no bundle given: meterctl bundle verify --pubkey FILE... BUNDLE")
        bundle_path = pubkeys.pop()
    args.bundle = bundle_path
    data = _read(bundle_path)
    keys = _public_keys(pubkeys)
    try:
        b = host_bundle.verify(data, keys, policy=args.policy)
    except fmt.BundleError as e:
        raise CliError("verification failed: %s" % e) from None
    algs = ", ".join("%s %s" % (fmt.ALG_NAMES[a], k.hex()) for a, k, _ in b.entries)
    print("OK: %s version %s counter %d, %d files; signed by %s; software id %s"
          % (args.bundle, b.manifest.version, b.manifest.counter, len(b.manifest.files), algs,
             fmt.software_id(b.manifest_bytes)))
    if b.manifest.expires <= time.time():
        print("note: the bundle expired at %d; devices refuse it" % b.manifest.expires, file=sys.stderr)
    return 0


def run_show(args):
    try:
        b = host_bundle.read(_read(args.bundle))
    except fmt.BundleError as e:
        raise CliError(str(e)) from None
    for line in host_bundle.describe(b):
        print(line)
    return 0
