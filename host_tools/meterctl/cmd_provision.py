"""``meterctl provision``: install a device master key (and, for production, the three role keys and the
production mode) on a meter over serial.

    meterctl provision --port PORT --key KEYFILE [--epoch N] [--timeout S]
    meterctl provision --port PORT --key-dir DIR --production [--accept-unprotected-keys]

Development meter (REPL open): runs a snippet that calls board.keystore().provision(key, epoch)
(hal/keystore.py: MCU-internal storage). The first key epoch continues above every epoch this MCU ever
started (the keystore's, and the one a reset to the original state noted: console/MODE.md), so a
re-provision never restarts at epoch 1. With --production it also installs the role keys of DIR
(KEYFILES.md: missing key files are created there, 0600) and the production mode, then resets the board:
it boots with the REPL closed. A board whose key storage is not MCU-internal is refused production
mode unless --accept-unprotected-keys is given (status then says so).
Production meter (console protocol): logs in as admin with DIR/admin.key and installs DIR's master key
(a new key epoch) and role keys. Only key ids are printed, never a key."""
import sys

from meterctl.cli import CliError

EXIT_HAS_KEY = 3
EXIT_REFUSED = 4

EPILOG = """\
exit status:
  0  key installed; the device reports the key file's key id
  2  bad input: unreadable key file, no port, device not answering, no board.py on the device
  3  the device already has a key (nothing changed; re-keying is keystore.rotate(), not provisioning);
     with --production: a different key than DIR/master.key
  4  production mode refused: key storage not MCU-internal without --accept-unprotected-keys, or an
     --epoch below the next free key epoch
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
    from umeter.console import mode as M
    low = M.next_epoch(ks)
    if epoch and epoch < low:
        print('EPOCH', low)
        return
    ks.provision(unhexlify(hexkey), epoch or low)
    ks = board.keystore()
    print('OK', ks.key_id(), ks.epoch)
    gc.collect()
try:
    _ump('%s', %d)
finally:
    del _ump
"""

# Production provisioning on a development meter. Order: master key, role keys, mode last (a cut before
# the mode leaves a development meter that can be provisioned again).
PRODUCTION_SNIPPET = """\
def _ump(hexkey, want, epoch, roles, accept):
    import gc
    from binascii import unhexlify
    import board
    from umeter.console import mode as M
    from umeter.console.rolekeys import RoleKeys
    ks = board.keystore()
    if not M.protected(board) and not accept:
        print('UNPROTECTED', getattr(board, 'KEY_STORAGE', None))
        return
    if ks.provisioned:
        if ks.key_id() != want or getattr(board, 'DEVELOPMENT_KEY', False):
            print('HAVE', ks.key_id(), ks.epoch, 1 if getattr(board, 'DEVELOPMENT_KEY', False) else 0)
            return
    else:
        low = M.next_epoch(ks)
        if epoch and epoch < low:
            print('EPOCH', low)
            return
        ks.provision(unhexlify(hexkey), epoch or low)
    rk = RoleKeys(ks.backend)
    ids = [rk.set_key(i + 1, unhexlify(h)) for i, h in enumerate(roles)]
    M.set_production(ks.backend, board, accept)
    ks = board.keystore()
    print('OK', ks.key_id(), ks.epoch, M.load(ks.backend).name, ' '.join(ids))
    gc.collect()
try:
    _ump('%s', '%s', %d, %r, %r)
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
    key = p.add_mutually_exclusive_group(required=True)
    key.add_argument("--key", help="device master key file (from `meterctl keys new`)")
    key.add_argument("--key-dir", help="host key directory (KEYFILES.md): master.key and the role keys; "
                                       "missing ones are created")
    p.add_argument("--production", action="store_true",
                   help="also install the role keys and production mode (needs --key-dir)")
    p.add_argument("--accept-unprotected-keys", action="store_true",
                   help="allow production mode on a board whose key storage is not MCU-internal")
    p.add_argument("--epoch", type=int, default=None,
                   help="first key epoch (default: the next one this MCU never used; 1 on a new one)")
    p.add_argument("--timeout", type=float, default=10.0,
                   help="seconds of device silence that fail (default: 10)")
    p.set_defaults(func=run)


def run(args):
    from meterctl.remote import Remote, RemoteError
    from meterctl.keys import KeyFileError, key_id, read_key_file

    if args.epoch is not None and not 0 < args.epoch <= 0xFFFFFFFF:
        raise CliError("--epoch must be 1..4294967295")
    if args.production and not args.key_dir:
        raise CliError("--production needs --key-dir DIR (the master key and the three role keys)")
    if args.key_dir:
        return _run_key_dir(args)
    try:
        key = read_key_file(args.key)
    except KeyFileError as e:
        raise CliError(str(e)) from None
    want = key_id(key)
    try:
        with Remote(args.port, timeout=args.timeout) as dev:
            out = dev.exec(SNIPPET % (key.hex(), args.epoch or 0))
    except RemoteError as e:
        raise CliError(_no_key(str(e), key)) from None
    words = out.split()
    if len(words) >= 4 and words[0] == "HAVE":
        kind = "a development key" if words[3] == "1" else "a key"
        same = " (the same key as %s)" % args.key if words[1] == want else ""
        print("meterctl provision: refused: the device on %s already has %s, key id %s, epoch %s%s; "
              "nothing changed" % (args.port, kind, words[1], words[2], same), file=sys.stderr)
        return EXIT_HAS_KEY
    if len(words) >= 2 and words[0] == "EPOCH":
        print("meterctl provision: refused: key epochs below %s were used on this MCU already; nothing "
              "changed" % words[1], file=sys.stderr)
        return EXIT_REFUSED
    if len(words) < 3 or words[0] != "OK":
        raise CliError("unexpected answer from the device on %s: %r" % (args.port, _no_key(out, key)[:80]))
    if words[1] != want:
        raise CliError("the device on %s reports key id %s after provisioning, expected %s"
                       % (args.port, words[1], want))
    print("provisioned key id %s, key epoch %s on %s" % (words[1], words[2], args.port))
    print("reset the board (mpremote connect %s reset) so the meter starts sealing records with it"
          % args.port, file=sys.stderr)
    return 0


def _run_key_dir(args):
    from meterctl import production as prod
    from meterctl.remote import Remote, RemoteError

    kd = prod.KeyDir(args.key_dir)
    made = kd.create_missing()
    if made:
        print("created %s in %s (mode 0600)" % (", ".join("%s.key" % m for m in made), kd.path),
              file=sys.stderr)
    keys = {name: kd.key(name) for name in (prod.MASTER,) + prod.ROLES}
    ids = kd.ids()
    try:
        with Remote(args.port, timeout=min(args.timeout, 3.0)) as dev:
            if not args.production:
                out = dev.exec(SNIPPET % (keys[prod.MASTER].hex(), args.epoch or 0))
            else:
                out = dev.exec(PRODUCTION_SNIPPET % (
                    keys[prod.MASTER].hex(), ids[prod.MASTER], args.epoch or 0,
                    [keys[r].hex() for r in prod.ROLES], bool(args.accept_unprotected_keys)))
                if out.split()[:1] == ["OK"]:
                    try:
                        dev.exec("import machine\nmachine.reset()\n", timeout=1.0)
                    except RemoteError:
                        pass  # the board resets under the command
    except RemoteError as e:
        if not args.production or prod.which_mode(args.port) is None:
            raise CliError(_no_key(str(e), keys[prod.MASTER])) from None
        return _reprovision(args, kd, keys, ids)
    return _report(args, out, keys, ids)


def _report(args, out, keys, ids):
    from meterctl import production as prod
    text = out
    for k in keys.values():
        text = _no_key(text, k)
    words = text.split()
    if words[:1] == ["HAVE"] and len(words) >= 4:
        kind = "a development key" if words[3] == "1" else "a different key"
        print("meterctl provision: refused: the device on %s already has %s, key id %s, epoch %s; nothing "
              "changed" % (args.port, kind, words[1], words[2]), file=sys.stderr)
        return EXIT_HAS_KEY
    if words[:1] == ["UNPROTECTED"]:
        print("meterctl provision: refused: the board's key storage (%s) is not MCU-internal: a clip reads "
              "the keys; give --accept-unprotected-keys to allow production mode anyway; nothing changed"
              % " ".join(words[1:]), file=sys.stderr)
        return EXIT_REFUSED
    if words[:1] == ["EPOCH"]:
        print("meterctl provision: refused: key epochs below %s were used on this MCU already; nothing "
              "changed" % words[1], file=sys.stderr)
        return EXIT_REFUSED
    if words[:1] != ["OK"] or len(words) < 3 or words[1] != ids[prod.MASTER]:
        raise CliError("unexpected answer from the device on %s: %r" % (args.port, text[:80]))
    print("provisioned key id %s, key epoch %s on %s" % (words[1], words[2], args.port))
    if args.production:
        if words[4:7] != [ids[r] for r in prod.ROLES]:
            raise CliError("the device on %s reports other role key ids than %s" % (args.port, args.key_dir))
        for r in prod.ROLES:
            print("role %s key id %s" % (r, ids[r]))
        print("mode %s: the board resets and boots with its REPL closed" % words[3])
    else:
        print("reset the board (mpremote connect %s reset) so the meter starts sealing records with it"
              % args.port, file=sys.stderr)
    return 0


def _reprovision(args, kd, keys, ids):
    """A production meter: admin login, then the provision command (encrypted)."""
    import json
    from meterctl import production as prod
    from meterctl.console_client import ConsoleError
    payload = b"".join(keys[n] for n in (prod.MASTER,) + prod.ROLES)
    try:
        with prod.Console(args.port, kd.role_key("admin"), "admin", timeout=args.timeout) as c:
            got = json.loads(c.call("provision", payload, secret=True))
            c.rebooting()
    except ConsoleError as e:
        raise CliError("the production meter on %s refused: %s (re-provisioning needs the admin key it "
                       "holds, %s)" % (args.port, e, kd.file("admin"))) from None
    if got["key_id"] != ids[prod.MASTER]:
        raise CliError("the device on %s reports key id %s, expected %s" % (args.port, got["key_id"],
                                                                           ids[prod.MASTER]))
    print("provisioned key id %s, key epoch %s on %s (production meter, as admin)"
          % (got["key_id"], got["epoch"], args.port))
    for i, r in enumerate(prod.ROLES):
        print("role %s key id %s" % (r, got["role_key_ids"][str(i + 1)]))
    return 0


def _no_key(text, key):
    """Belt and braces: never let the key's hex reach a message, whatever the device echoed."""
    for form in (key.hex(), key.hex().upper()):
        text = text.replace(form, "<key>")
    return text
