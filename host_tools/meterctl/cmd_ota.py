"""``meterctl ota``: deliver a signed bundle to a device's streaming installer (SLOTS.md).

    meterctl ota push --port P BUNDLE      over the raw REPL (development boards, the virtual board), with a
                                           progress bar; a broken connection reconnects and resumes
    meterctl ota push --port P --key-dir D BUNDLE    (or --role-key FILE) a production meter (closed REPL)
                                           over the console protocol as admin (ota/CONSOLE_OTA.md), chosen
                                           automatically: the same installer, the same checks
    meterctl ota fetch --port P URL        the device downloads the bundle itself over HTTP (resumes too)
    meterctl ota trust --port P --board B --arch A --pubkey F... --policy P [--floor F]
                                           provision the device's update trust store (once; later changes
                                           come only from signed, confirmed bundles)

The device verifies everything; the new app boots in trial mode at the next reset and must confirm."""
import json
import sys
from pathlib import Path

from meterctl import ota_push
from meterctl.cli import CliError
from meterctl.cmd_status import add_port_args
from meterctl.remote import Remote, RemoteError

TRUST_CODE = ("import json as _umj\n"
              "from umeter.ota import slots as _ums, trust as _umt\n"
              "print(_umj.dumps(_umt.provision(_ums.default_backend(), %r, %r, %r, %d, %d).summary()))\n"
              "del _umj, _ums, _umt\n")
POLICIES = {"ed25519": 1, "lms": 2, "hybrid": 3}
FETCH_CODE = ("from umeter.ota import http as _uoh\n"
              "print(_uoh.fetch(%r))\n"
              "del _uoh\n")


def register(subparsers):
    p = subparsers.add_parser("ota", help="install a signed update bundle on a device",
                              description="Deliver a signed bundle; the device verifies it, writes it into "
                                          "its inactive slot and boots it in trial mode at the next reset.")
    sub = p.add_subparsers(dest="ota_command", metavar="{push,fetch}")
    sub.required = True
    push = sub.add_parser("push", help="send a bundle over the serial port (raw REPL, or the console "
                                       "protocol of a production meter)")
    add_port_args(push)
    push.add_argument("bundle", help="signed bundle file")
    push.add_argument("--role-key", metavar="FILE",
                      help="admin role key file, for a production meter (console protocol)")
    push.add_argument("--key-dir", metavar="DIR",
                      help="host key directory (KEYFILES.md): its admin.key is used for a production meter")
    push.add_argument("--role", choices=("reader", "operator", "admin"), default="admin",
                      help="role to log in as on a production meter (default: admin, the only one allowed)")
    push.add_argument("--retries", type=int, default=ota_push.RETRIES,
                      help="reconnect and resume this many times (default: %d)" % ota_push.RETRIES)
    push.set_defaults(func=run_push)
    fetch = sub.add_parser("fetch", help="let the device download a bundle over HTTP")
    add_port_args(fetch)
    fetch.add_argument("url", help="http:// URL of the bundle, reachable from the device")
    fetch.set_defaults(func=run_fetch)
    trust = sub.add_parser("trust", help="provision the device's update trust store (keys, policy, floor)")
    add_port_args(trust)
    trust.add_argument("--board", required=True, help="the board name bundles must list (e.g. esp32_devkitc)")
    trust.add_argument("--arch", required=True, choices=("xtensawin", "armv6m", "x64", "x86", "py"),
                       help="the arch bundles must be built for")
    trust.add_argument("--pubkey", action="extend", nargs="+", required=True, metavar="FILE",
                       help="trusted public key files (meterctl keys new writes NAME.pub)")
    trust.add_argument("--policy", required=True, choices=sorted(POLICIES), help="signatures required")
    trust.add_argument("--floor", choices=sorted(POLICIES),
                       help="weakest policy a signed update may ever set (default: --policy)")
    trust.set_defaults(func=run_trust)


def _production(args, key):
    """True when `port` is a production meter to reach over the console: a role key was given and the
    port answers hello. Without a key, a port whose raw REPL does not answer but whose console does
    is refused with a hint (the admin key is needed)."""
    from meterctl import production as prod
    if key is not None:
        return prod.which_mode(args.port) is not None
    try:
        Remote(args.port, timeout=args.timeout).open().close()
    except RemoteError:
        if prod.which_mode(args.port) is not None:
            raise CliError(prod.production_hint(args.port) + " (the admin key: ota push needs the admin "
                           "role)") from None
        raise
    return False


def _push_console(args, data, key, out):
    from meterctl import ota_console
    result, sessions, starts = ota_console.push(
        ota_console.open_production(args.port, key, args.role, args.timeout), data,
        progress=ota_push.progress_bar(sys.stderr), retries=args.retries,
        log=lambda line: print("ota push: " + line, file=sys.stderr))
    extra = "" if sessions == 1 else " (%d sessions, resumed at payload byte %s)" % (
        sessions, ", ".join(str(r) for r in starts[1:]))
    print("installed %s on %s as %s over the console protocol%s: software id %s in slot %s; the meter "
          "reboots into its trial boot now" % (args.bundle, args.port, args.role, extra,
                                               result.get("software_id"), result.get("slot")), file=out)
    return 0


def run_push(args, out=None):
    from meterctl import production as prod
    out = out or sys.stdout
    try:
        data = Path(args.bundle).read_bytes()
    except OSError as e:
        raise CliError("cannot read %s: %s" % (args.bundle, e.strerror)) from None
    ota_push.split(data)  # not a bundle: said before anything is sent
    key = prod.role_key_from(args, args.role)
    if _production(args, key):
        return _push_console(args, data, key, out)
    sid, sessions, starts = ota_push.push(args.port, data, timeout=args.timeout,
                                           progress=ota_push.progress_bar(sys.stderr), retries=args.retries,
                                           log=lambda line: print("ota push: " + line, file=sys.stderr))
    extra = "" if sessions == 1 else " (%d sessions, resumed at payload byte %s)" % (
        sessions, ", ".join(str(r) for r in starts[1:]))
    print("installed %s on %s%s: software id %s; it boots in trial mode at the next reset"
          % (args.bundle, args.port, extra, sid), file=out)
    return 0


def run_trust(args, out=None):
    from meterctl import signing_keys

    try:
        keys = [signing_keys.read_public(p) for p in args.pubkey]
    except signing_keys.SigningKeyError as e:
        raise CliError(str(e)) from None
    policy = POLICIES[args.policy]
    floor = POLICIES[args.floor or args.policy]
    if floor > policy:
        raise CliError("the floor (%s) is stronger than the policy (%s)" % (args.floor, args.policy))
    code = TRUST_CODE % (args.board, args.arch, [(alg, bytes(pub)) for alg, pub in keys], policy, floor)
    with Remote(args.port, timeout=args.timeout) as dev:
        try:
            text = dev.exec(code)
        except RemoteError as e:
            final = ota_push._device_error(e)
            raise (final or e) from None
    summary = json.loads(text.strip().splitlines()[-1])
    print("update trust store provisioned on %s: board %s, arch %s, policy %s (floor %s), keys %s"
          % (args.port, summary["board"], summary["arch"], summary["policy"], summary["policy_floor"],
             ", ".join(summary["keys"])), file=out or sys.stdout)
    return 0


def run_fetch(args, out=None):
    out = out or sys.stdout
    with Remote(args.port, timeout=args.timeout) as dev:
        try:
            text = dev.exec(FETCH_CODE % args.url, timeout=max(args.timeout, 120))
        except RemoteError as e:
            final = ota_push._device_error(e)
            raise (final or e) from None
    print("installed %s on %s: software id %s; it boots in trial mode at the next reset"
          % (args.url, args.port, text.strip().splitlines()[-1]), file=out or sys.stdout)
    return 0
