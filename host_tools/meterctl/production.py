"""meterctl against a production meter: the console protocol over a serial port (console_client), the host
key directory (KEYFILES.md), and what the commands read through it (status, identification, export).

    keys = KeyDir("meter-keys")                  # master.key, reader.key, operator.key, admin.key (0600)
    with Console(port, keys.role_key("reader")) as c:
        st = c.json("status")                    # paged JSON answers put together
        snap = read_snapshot(c, port)            # export.Snapshot of the sealed records, with the mark

A development meter (REPL open) is reached through remote.Remote as before; which_mode(port) tells the
two apart without sending anything a REPL would run. console_for(args) is the automatic choice of the
commands (export, watch, reset): a Console when a role key was given (--role-key FILE, or --key-dir DIR's
<role>.key) and a console answers, else None (the raw-REPL path). reboot(console) is the operator's clean
reboot (`meterctl reset`)."""
import json
import os
import struct
import time
from binascii import unhexlify
from pathlib import Path

from meterctl import mpcompat
from meterctl.cli import CliError
from meterctl.keys import KeyFileError, key_id, new_key, read_key_file, write_key_file

mpcompat.install()
from umeter.console import mode as modes  # noqa: E402
from umeter.console.rolekeys import role_key_id  # noqa: E402

ROLES = ("reader", "operator", "admin")
MASTER = "master"
_PAGE_HEAD = 4


# --- the host key directory -------------------------------------------------------------------------------
class KeyDir:
    """DIR/master.key (the device master key, as `meterctl keys new` writes one) and DIR/<role>.key for
    reader, operator and admin: 32 random bytes each, mode 0600, DIR 0700 (KEYFILES.md)."""

    def __init__(self, path):
        self.path = Path(path)

    def __repr__(self):
        return "<KeyDir %s>" % self.path

    def file(self, name):
        return self.path / ("%s.key" % name)

    def create_missing(self):
        """Create DIR and every missing key file. Returns the names created."""
        self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.path, 0o700)
        made = []
        for name in (MASTER,) + ROLES:
            if not self.file(name).exists():
                write_key_file(self.file(name), new_key())
                made.append(name)
        return made

    def key(self, name):
        try:
            return read_key_file(self.file(name))
        except KeyFileError as e:
            raise CliError(str(e)) from None

    def role_key(self, role):
        return self.key(role)

    def ids(self):
        """name -> key id (the master's as the keystore names it, the roles' as the console does)."""
        out = {MASTER: key_id(self.key(MASTER))}
        for r in ROLES:
            out[r] = role_key_id(self.key(r))
        return out


def role_key_from(args, role):
    """The role key a command was given: --role-key FILE, else --key-dir DIR's <role>.key, else None."""
    if getattr(args, "role_key", None):
        try:
            return read_key_file(args.role_key)
        except KeyFileError as e:
            raise CliError(str(e)) from None
    if getattr(args, "key_dir", None) and KeyDir(args.key_dir).file(role).exists():
        return KeyDir(args.key_dir).role_key(role)
    return None


def add_role_args(p, key_dir=True, default_role="reader"):
    p.add_argument("--role-key", metavar="FILE",
                   help="role key file for a production meter (console protocol)")
    if key_dir:
        p.add_argument("--key-dir", metavar="DIR", help="host key directory (KEYFILES.md): its <role>.key "
                                                        "is used for a production meter")
    p.add_argument("--role", choices=ROLES, default=default_role,
                   help="role to log in as (default: %s)" % default_role)


def is_host_key_dir(path):
    """A host key directory (KEYFILES.md: master.key and role keys), not a keystore (keys.bin)."""
    d = Path(path)
    return (d / ("%s.key" % MASTER)).is_file() and not (d / "keys.bin").exists()


# --- the virtual board's view of its MCU's mode -----------------------------------------------------------
def board_mode(keys_dir):
    """The mode stored in a keystore directory (the virtual board's MCU-internal storage)."""
    from meterctl.markfile import ReadOnlyBackend
    return modes.load(ReadOnlyBackend(keys_dir))


# --- the serial line --------------------------------------------------------------------------------------
class Console:
    """A logged-in console session on `port` (context manager)."""

    def __init__(self, port, role_key=None, role="reader", timeout=10.0, read_timeout=0.02):
        self.port = port
        self.read_timeout = read_timeout  # per serial read: the client drains, then awaits, each exchange
        self.role_key = role_key
        self.role = role
        self.timeout = timeout
        self._ser = None
        self.client = None
        self._logout = True

    def __enter__(self):
        return self.open()

    def open(self):
        """Open the port and log in (again, after close()). Returns self."""
        import serial
        from meterctl.console_client import ConsoleClient
        from meterctl.remote import check_port
        check_port(self.port)
        try:
            self._ser = serial.Serial(self.port, 115200, timeout=self.read_timeout,
                                      write_timeout=self.timeout)
        except (serial.SerialException, OSError, ValueError) as e:
            raise CliError("cannot open port %s: %s" % (self.port, e)) from None
        self._logout = True
        self.client = ConsoleClient(self._ser.read, self._write, timeout=self.timeout)
        if self.role_key is not None:
            try:
                self.client.login(self.role, self.role_key)
            except BaseException:
                self._ser.close()
                self._ser = None
                raise
        return self

    def _write(self, data):
        self._ser.write(data)
        self._ser.flush()

    def __exit__(self, *exc):
        self.close(logout=exc[0] is None)

    def close(self, logout=True):
        """Log out (unless the meter is rebooting, or logout=False) and close the port."""
        if self._ser is None:
            return
        try:
            if self.client is not None and logout and self._logout:
                self.client.logout()
        finally:
            self._ser.close()
            self._ser = None

    def call(self, command, payload=b"", secret=False):
        return self.client.call(command, payload, secret)

    def rebooting(self):
        """The command just answered reboots the meter: no logout at the end (nobody would answer it)."""
        self._logout = False

    def paged(self, command):
        """A paged answer (offset u32 requests; answer: total u32 || bytes) put together."""
        out = bytearray()
        total = None
        while total is None or len(out) < total:
            got = self.call(command, struct.pack(">I", len(out)))
            if len(got) < _PAGE_HEAD:
                raise CliError("short answer to %s from %s" % (command, self.port))
            total = struct.unpack(">I", got[:_PAGE_HEAD])[0]
            if len(got) == _PAGE_HEAD and len(out) < total:
                raise CliError("the answer to %s from %s stopped short" % (command, self.port))
            out.extend(got[_PAGE_HEAD:])
        return bytes(out)

    def json(self, command):
        from meterctl.cmd_status import parse_status
        return parse_status(self.paged(command).decode("utf-8", "replace"))


class _ReplSeen(Exception):
    """A MicroPython REPL answered the hello frame: a development board."""


def which_mode(port, timeout=2.0):
    """'production' when a console answers hello on `port` (its public line names the mode), else None.
    Only a hello frame is sent: a REPL reads it as a Ctrl-A (raw REPL) plus bytes it never runs, and its
    raw-REPL banner ends the wait at once (a development board costs no time-out)."""
    import serial
    from meterctl.console_client import ConsoleClient, ConsoleError, ProtocolError
    try:
        ser = serial.Serial(port, 115200, timeout=0.02)
    except (serial.SerialException, OSError, ValueError):
        return None
    seen = bytearray()

    def read(n):
        data = ser.read(n)
        seen.extend(data)
        if _REPL_BANNER in seen:
            raise _ReplSeen()
        del seen[:-len(_REPL_BANNER)]
        return data

    try:
        line = ConsoleClient(read, ser.write, timeout=timeout).hello()
    except (ProtocolError, ConsoleError, _ReplSeen):
        return None
    finally:
        ser.close()
    parts = line.split("|")
    return parts[3] if len(parts) >= 4 and parts[0] == "umeter" else None


_REPL_BANNER = b"raw REPL; CTRL-B to exit"


def console_for(args, role=None, port=None):
    """A Console for a production meter when the command was given a role key (--role-key, or
    --key-dir's <role>.key) and the port answers the console protocol; None for a development board
    (raw REPL): the automatic choice of status, id, export, watch and reset."""
    role = role or getattr(args, "role", "reader")
    port = port or args.port
    key = role_key_from(args, role)
    if key is None:
        return None
    if which_mode(port, timeout=min(2.0, getattr(args, "timeout", 2.0))) is None:
        return None  # a REPL (or nothing) answered: the raw-REPL path says what is wrong
    return Console(port, key, role, timeout=getattr(args, "timeout", 10.0))


def production_hint(port):
    return ("%s speaks the console protocol (a production meter, REPL closed): give --role-key FILE or "
            "--key-dir DIR" % port)


# --- export over the protocol -----------------------------------------------------------------------------
def read_snapshot(console, port, progress=None):
    """export.Snapshot of every sealed record, with the device's high-water mark (markfile.Mark)."""
    from meterctl import export as ex
    from meterctl.markfile import Mark
    info = json.loads(console.paged("export"))
    m = info.get("mark")
    tamper = info.get("tamper")
    mark = None
    if m is not None and "problem" in m:
        mark = Mark(0, b"", source=port, tamper=tamper, problem="the device's high-water mark is "
                                                                "unreadable (%s)" % m["problem"])
    elif m is not None:
        mark = Mark(m["seq"], unhexlify(m["tag"]), m["epoch"], m["registers"], port, tamper)
    recs = []
    since = 0
    while True:
        got = console.call("export", struct.pack(">Q", since))
        nxt = struct.unpack(">Q", got[:8])[0]
        at = 8
        while at < len(got):
            seq, n = struct.unpack(">QH", got[at:at + 10])
            rec = got[at + 10:at + 10 + n]
            if len(rec) != n or (recs and seq <= recs[-1][0]):
                raise CliError("garbled export answer from %s" % port)
            recs.append((seq, rec))
            at += 10 + n
        if progress is not None:
            progress(len(recs), max(info.get("records", 0), len(recs)))
        if not nxt:
            break
        since = nxt
    last = recs[-1][0] if recs else info["last_seq"]
    return ex.Snapshot(port, recs, info["oldest_seq"], last, info["corrupt_skipped"], info["sector_size"],
                       mark)


def wait_for_console(port, timeout=20.0):
    """Poll hello until a console answers (after a reboot into production mode); the public line."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        mode = which_mode(port, timeout=1.0)
        if mode is not None:
            return mode
        time.sleep(0.2)
    raise CliError("no console answered on %s within %gs" % (port, timeout))


# --- the operator's reboot ---------------------------------------------------------------------------------
def reboot(console):
    """The operator's `reboot` (console code 0x26): the meter answers, stops cleanly (checkpoint first) and
    restarts. The answer payload. A firmware without the command raises a CliError that says so."""
    from meterctl.console_client import ConsoleError
    from umeter.console import framing, roles
    code = roles.CODES.get("reboot", REBOOT_CODE)
    try:
        got = console.call(code)
    except ConsoleError as e:
        if e.code in (framing.ERR_UNSUPPORTED, framing.ERR_UNKNOWN_COMMAND):
            raise CliError("the meter on %s does not support the reboot command (it answered %s): its "
                           "firmware predates it; nothing was done" % (console.port, e.name)) from None
        raise
    console.rebooting()
    return got


REBOOT_CODE = 0x26
