"""``meterctl keys``: device master keys on the host.

    meterctl keys new --out FILE [--force]   32 random bytes into FILE (mode 0600); prints the key id
    meterctl keys id FILE                    prints the key id of a key file
The key itself is never printed."""
from meterctl.cli import CliError
from meterctl.keys import KeyFileError, key_id, new_key, read_key_file, write_key_file


def register(subparsers):
    p = subparsers.add_parser("keys", help="create and inspect device master keys",
                              description="Device master keys: 32 random bytes in a file only its owner "
                                          "can read. The key is never printed, only its key id.")
    sub = p.add_subparsers(dest="keys_command", metavar="{new,id}")
    sub.required = True
    n = sub.add_parser("new", help="create a new device master key file (mode 0600)")
    n.add_argument("--out", required=True, help="key file to create")
    n.add_argument("--force", action="store_true", help="replace an existing key file")
    n.set_defaults(func=run_new)
    i = sub.add_parser("id", help="print the key id of a key file")
    i.add_argument("file", help="key file")
    i.set_defaults(func=run_id)


def run_new(args):
    key = new_key()
    try:
        write_key_file(args.out, key, force=args.force)
    except KeyFileError as e:
        raise CliError(str(e)) from None
    print("wrote %s (mode 0600), key id %s" % (args.out, key_id(key)))
    return 0


def run_id(args):
    try:
        key = read_key_file(args.file)
    except KeyFileError as e:
        raise CliError(str(e)) from None
    print(key_id(key))
    return 0
