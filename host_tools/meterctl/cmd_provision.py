"""``meterctl provision``: install a device master key on a meter over serial.

    meterctl provision --port PORT --key KEYFILE [--epoch N] [--timeout S]

Runs a snippet on the device that calls board.keystore().provision(key, epoch) (hal/keystore.py: MCU-
internal storage: ESP32 NVS, RP2040 internal filesystem, the virtual board's key directory). A device that
already has a key is never re-keyed here (the keystore refuses too). Prints the key id the device
reports, which must equal the key file's; the key itself is only ever sent to the device, as the body of
the exec'd snippet (the raw REPL does not echo it)."""
import sys

from meterctl.cli import CliError

EXIT_HAS_KEY = 3

EPILOG = """\
exit status:
  0  key installed; the device reports the key file's key id
  2  bad input: unreadable key file, no port, device not answering, no board.py on the device
  3  the device already has a key (nothing changed; re-keying is keystore.rotate(), not provisioning)
The running meter reads its key at boot: reset the board afterwards (mpremote reset) so it starts
sealing records. The virtual board provisions its own development key at first start, so it
always reports one."""

# MicroPython, on the device. Only the key id and epoch are printed, never the key.
SNIPPET = """\
def _ump(hexkey, epoch):
    import gc
    from binascii import unhexlify
    import board
    ks = board.keystore()
    if ks.provisioned:
        print('HAVE', ks.key_id(), ks.epoch, 1 if getattr(board, 'DEVELOPMENT_KEY', False) else 0)
        return
    ks.provision(unhexlify(hexkey), epoch)
    ks = board.keystore()
    print('OK', ks.key_id(), ks.epoch)
    gc.collect()
try:
    _ump('%s', %d)
finally:
    del _ump
"""


def register(subparsers):
    import argparse

    p = subparsers.add_parser(
        "provision", help="install a device master key on a meter over serial",
        description="Install the device master key from KEYFILE (meterctl keys new) in the meter's "
                    "internal keystore. Refuses a device that already has a key. Prints the key id only.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--port", required=True, help="serial port of the device (or the virtual board's pty)")
    p.add_argument("--key", required=True, help="device master key file (from `meterctl keys new`)")
    p.add_argument("--epoch", type=int, default=1, help="first key epoch (default: 1)")
    p.add_argument("--timeout", type=float, default=10.0,
                   help="seconds of device silence that fail (default: 10)")
    p.set_defaults(func=run)


def run(args):
    from meterctl.remote import Remote, RemoteError
    from meterctl.keys import KeyFileError, key_id, read_key_file

    if not 0 < args.epoch <= 0xFFFFFFFF:
        raise CliError("--epoch must be 1..4294967295")
    try:
        key = read_key_file(args.key)
    except KeyFileError as e:
        raise CliError(str(e)) from None
    want = key_id(key)
    try:
        with Remote(args.port, timeout=args.timeout) as dev:
            out = dev.exec(SNIPPET % (key.hex(), args.epoch))
    except RemoteError as e:
        raise CliError(_no_key(str(e), key)) from None
    words = out.split()
    if len(words) >= 4 and words[0] == "HAVE":
        kind = "a development key" if words[3] == "1" else "a key"
        same = " (the same key as %s)" % args.key if words[1] == want else ""
        print("meterctl provision: refused: the device on %s already has %s, key id %s, epoch %s%s; "
              "nothing changed" % (args.port, kind, words[1], words[2], same), file=sys.stderr)
        return EXIT_HAS_KEY
    if len(words) < 3 or words[0] != "OK":
        raise CliError("unexpected answer from the device on %s: %r" % (args.port, _no_key(out, key)[:80]))
    if words[1] != want:
        raise CliError("the device on %s reports key id %s after provisioning, expected %s"
                       % (args.port, words[1], want))
    print("provisioned key id %s, key epoch %s on %s" % (words[1], words[2], args.port))
    print("reset the board (mpremote connect %s reset) so the meter starts sealing records with it"
          % args.port, file=sys.stderr)
    return 0


def _no_key(text, key):
    """Belt and braces: never let the key's hex reach a message, whatever the device echoed."""
    for form in (key.hex(), key.hex().upper()):
        text = text.replace(form, "<key>")
    return text
