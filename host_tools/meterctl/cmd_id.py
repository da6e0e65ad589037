"""``meterctl id --port P [--json]``: software identification (WELMEC 7.2) of the running device: the app
version, the installed security counter and the software id, SHA-256 of the active slot's manifest (the
same 64 characters `meterctl bundle show` prints for the bundle). A development deploy says so."""
import json
import sys

from meterctl.cli import CliError
from meterctl.cmd_status import add_port_args, parse_status
from meterctl.remote import Remote, RemoteError

ID_CODE = ("import json as _umj\n"
           "from umeter.ota import slots as _ums\n"
           "_umi = _ums.identity()\n"
           "if _umi['version'] is None:\n"
           "    try:\n"
           "        from umeter import app as _uma\n"
           "        _umi['version'] = getattr(_uma, 'SOFTWARE_ID', None)\n"
           "    except ImportError:\n"
           "        pass\n"
           "print(_umj.dumps(_umi))\n"
           "del _umj, _ums, _umi\n")


def register(subparsers):
    p = subparsers.add_parser("id", help="show the device's software identification",
                              description="App version, security counter and software id (SHA-256 of the "
                                          "active slot's signed manifest) of the device.")
    add_port_args(p)
    from meterctl.production import add_role_args
    add_role_args(p)
    p.add_argument("--json", action="store_true", help="print the identification as one JSON object")
    p.set_defaults(func=run)


def fetch_identity(dev):
    try:
        text = dev.exec(ID_CODE)
    except RemoteError as e:
        if "ImportError" in str(e) and "umeter" in str(e):
            raise CliError("no umeter firmware with OTA support on %s" % dev.port) from None
        raise
    info = parse_status(text)
    if not isinstance(info, dict):
        raise CliError("the device answered something that is not an identification")
    return info


def format_identity(info, port):
    lines = ["umeter on %s" % port]
    if info.get("error"):
        lines.append("  update state   DAMAGED: %s" % info["error"])
    if info.get("mode") == "development":
        lines.append("  app version    %s" % (info.get("version") or "?"))
        lines.append("  software id    none: unverified development deploy")
    else:
        trial = " (trial boot, not confirmed yet)" if info.get("trial") else ""
        lines.append("  app version    %s%s" % (info.get("version"), trial))
        lines.append("  software id    %s" % info.get("software_id"))
        lines.append("  slot           %s" % info.get("slot"))
    counter = info.get("security_counter")
    lines.append("  security ctr   %s" % ("not provisioned" if counter is None else counter))
    if info.get("policy"):
        lines.append("  update policy  %s (floor %s)" % (info["policy"], info["policy_floor"]))
    return "\n".join(lines)


def run(args, out=None):
    from meterctl import production as prod
    out = out or sys.stdout
    console = prod.console_for(args, args.role)
    if console is not None:  # a production meter: the console's software_id (reader and up)
        with console as c:
            info = c.json("software_id")
    else:
        try:
            with Remote(args.port, timeout=args.timeout) as dev:
                info = fetch_identity(dev)
        except RemoteError:
            if prod.which_mode(args.port) is not None:
                raise CliError(prod.production_hint(args.port)) from None
            raise
    if args.json:
        print(json.dumps(info, sort_keys=True), file=out)
    else:
        print(format_identity(info, args.port), file=out)
    return 0
