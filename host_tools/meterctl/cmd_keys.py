"""``meterctl keys``: device master keys and update-signing keys on the host.

    meterctl keys new --out FILE [--force]            device master key: 32 random bytes (mode 0600)
    meterctl keys new --alg ed25519 --out FILE        update-signing key FILE (0600) + FILE.pub
    meterctl keys new --alg lms [--lms-type H10] [--ots-type W4] --out FILE
                                          stateful LMS key (default LMS_SHA256_M32_H10/LMOTS_SHA256_N32_W4)
    meterctl keys id FILE                             key id of any of these files
Only key ids and public keys are printed, never a private key."""
import sys

from meterctl import signing_keys
from meterctl.cli import CliError
from meterctl.keys import KeyFileError, key_id, new_key, read_key_file, write_key_file


def register(subparsers):
    p = subparsers.add_parser("keys", help="create and inspect device master keys and signing keys",
                              description="Device master keys (32 random bytes) and update-signing keys "
                                          "(Ed25519, LMS) in files only their owner can read. Private keys "
                                          "are never printed, only key ids and public keys.")
    sub = p.add_subparsers(dest="keys_command", metavar="{new,id}")
    sub.required = True
    n = sub.add_parser("new", help="create a new key file (mode 0600)")
    n.add_argument("--out", required=True, help="key file to create")
    n.add_argument("--alg", choices=("ed25519", "lms"),
                   help="make an update-signing key (and FILE.pub); without it: a device master key")
    n.add_argument("--lms-type", default=signing_keys.DEFAULT_LMS_TYPE, type=str.upper,
                   choices=sorted(signing_keys.LMS_TYPES, key=lambda t: int(t[1:])),
                   help="LMS tree height: 2^h one-time signatures (default %s)"
                        % signing_keys.DEFAULT_LMS_TYPE)
    n.add_argument("--ots-type", default=signing_keys.DEFAULT_OTS_TYPE, type=str.upper,
                   choices=sorted(signing_keys.OTS_TYPES, key=lambda t: int(t[1:])),
                   help="LM-OTS Winternitz width: W8 gives smaller, slower-to-verify signatures "
                        "(default %s)" % signing_keys.DEFAULT_OTS_TYPE)
    n.add_argument("--force", action="store_true", help="replace an existing key file")
    n.set_defaults(func=run_new)
    i = sub.add_parser("id", help="print the key id of a key file")
    i.add_argument("file", help="key file")
    i.set_defaults(func=run_id)


def run_new(args):
    if args.alg:
        return _new_signing_key(args)
    key = new_key()
    try:
        write_key_file(args.out, key, force=args.force)
    except KeyFileError as e:
        raise CliError(str(e)) from None
    print("wrote %s (mode 0600), key id %s" % (args.out, key_id(key)))
    return 0


def _new_signing_key(args):
    progress = None
    if args.alg == "lms":
        h = int(args.lms_type[1:])
        print("computing the LMS tree (%d one-time keys) ..." % (1 << h), file=sys.stderr, flush=True)
        progress = tree_progress
    try:
        key = signing_keys.new(args.out, args.alg, args.lms_type, args.ots_type, force=args.force,
                               progress=progress)
    except signing_keys.SigningKeyError as e:
        raise CliError(str(e)) from None
    print("wrote %s (mode 0600) and %s: %s key id %s (%s)"
          % (args.out, signing_keys.public_path(args.out), args.alg, key.key_id.hex(), key.describe()))
    print("public key %s" % key.public_key.hex())
    return 0


def tree_progress(done, total):
    """Leaves computed so far, on one terminal line (nothing when stderr is not a terminal)."""
    if sys.stderr.isatty():
        sys.stderr.write("\r  %3d %% (%d of %d leaves)%s" % (100 * done // total, done, total,
                                                            "\n" if done == total else ""))
        sys.stderr.flush()


def run_id(args):
    try:
        with open(args.file, "rb") as f:
            head = f.read(4)
    except OSError:
        head = b""   # read_key_file below says why
    if head in (signing_keys.PRIVATE_MAGIC, signing_keys.PUBLIC_MAGIC):
        try:
            alg, pub = signing_keys.read_public(args.file)
        except signing_keys.SigningKeyError as e:
            raise CliError(str(e)) from None
        print("%s %s" % (signing_keys.fmt.ALG_NAMES[alg], signing_keys.fmt.key_id(alg, pub).hex()))
        return 0
    try:
        key = read_key_file(args.file)
    except KeyFileError as e:
        raise CliError(str(e)) from None
    print(key_id(key))
    return 0
