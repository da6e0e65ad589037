"""The device's high-water mark on the host: read from a keystore directory (the virtual board's
IMG.keys), from a running device over serial (its keystore, KEYSTORE.md hwm0/hwm1), or from a mark
file (JSON, below) that `meterctl sim run` writes next to its image and `meterctl mark` writes for a
real device. `meterctl export --mark FILE` checks an image against it.

Mark file, version 1 (UTF-8 JSON, one object; nothing secret: the tag is already on the SPI flash):
    {"format": "umeter-mark", "version": 1,
     "seq": 1234,                # seq of the newest durable checkpoint record (u64)
     "epoch": 7,                 # key epoch that record was sealed under (0: not recorded, revision 1)
     "tag": "9f...",             # that record's seal tag, hex (16 or 32 bytes)
     "registers_mwh": {"1.8.0": 191639, ...},   # floors in whole mWh (mvarh); may be empty
     "tamper": {"count": 0, "active": false} | null,   # the keystore's tamper log, when known
     "source": "..."}            # where it was read (informational)
A reader refuses another format or version, a missing or mistyped field, a negative or >= 2**64
number, a tag that is not 1..64 bytes of hex: one line, never a guess."""
import json
import os
import tempfile
from binascii import unhexlify
from pathlib import Path

from meterctl import mpcompat
from meterctl.cli import CliError

FORMAT = "umeter-mark"
VERSION = 1
U64 = 1 << 64


class Mark:
    """A high-water mark as export checks it. registers: OBIS code -> floor in whole mWh (mvarh).
    tamper: {"count", "active"} of the keystore's tamper log, or None when the source has none.
    problem: set instead of seq when the source holds a mark that cannot be read (both copies damaged):
    export treats that as tamper, never as 'no mark'."""

    def __init__(self, seq, tag, epoch=0, registers=None, source="", tamper=None, problem=None):
        self.seq = seq
        self.tag = bytes(tag)
        self.epoch = epoch
        self.registers = dict(registers or {})
        self.source = source
        self.tamper = tamper
        self.problem = problem

    def __repr__(self):
        return "<Mark seq=%d epoch=%d from %s>" % (self.seq, self.epoch, self.source)

    def as_json(self):
        return {"format": FORMAT, "version": VERSION, "seq": self.seq, "epoch": self.epoch,
                "tag": self.tag.hex(), "registers_mwh": dict(sorted(self.registers.items())),
                "tamper": self.tamper, "source": self.source}


def _tamper_summary(log):
    return {"count": log.count, "active": bool(log.active)}


# --- keystore directory (read-only) ---------------------------------------------------------------------
class ReadOnlyBackend:
    """Keystore blob backend over a keystore_file directory (<name>.bin), never writing to it."""

    def __init__(self, directory):
        self._dir = Path(directory)

    def load(self, name):
        try:
            return (self._dir / ("%s.bin" % name)).read_bytes()
        except FileNotFoundError:
            return None

    def save(self, name, data):
        raise PermissionError("read-only keystore")

    def erase(self, name):
        raise PermissionError("read-only keystore")


def from_keystore(store, source):
    """The Mark of an open firmware KeyStore, or None before its first checkpoint."""
    from umeter.hal.keystore import KeystoreError

    tamper = _tamper_summary(store.tamper_log())
    try:
        hw = store.high_water()
    except KeystoreError as e:
        return Mark(0, b"", source=source, tamper=tamper, problem="the high-water mark in %s is unreadable "
                                                                  "(%s)" % (source, e))
    if hw is None:
        return None
    return Mark(hw.seq, hw.tag, hw.epoch, hw.registers, source, tamper)


def from_keys_dir(directory):
    mpcompat.install()
    from umeter.hal.keystore import KeyStore

    return from_keystore(KeyStore(ReadOnlyBackend(directory)), str(directory))


# --- mark file --------------------------------------------------------------------------------------------
def _u64(doc, name, path):
    v = doc.get(name)
    if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v < U64:
        raise CliError("mark file %s: %r must be an integer 0..2**64-1" % (path, name))
    return v


def parse(text, path):
    try:
        doc = json.loads(text)
    except ValueError:
        raise CliError("mark file %s is not JSON" % path) from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise CliError("mark file %s is not a umeter mark file (format %r)"
                       % (path, doc.get("format") if isinstance(doc, dict) else None))
    if doc.get("version") != VERSION:
        raise CliError("mark file %s has version %r; this meterctl reads version %d"
                       % (path, doc.get("version"), VERSION))
    seq, epoch = _u64(doc, "seq", path), _u64(doc, "epoch", path)
    if epoch > 0xFFFFFFFF or seq == 0:
        raise CliError("mark file %s: seq must be >= 1 and epoch a u32" % path)
    try:
        tag = unhexlify(doc.get("tag", ""))
    except (ValueError, TypeError):
        raise CliError("mark file %s: 'tag' is not hex" % path) from None
    if not 1 <= len(tag) <= 64:
        raise CliError("mark file %s: 'tag' must be 1..64 bytes" % path)
    regs = doc.get("registers_mwh", {})
    if not isinstance(regs, dict):
        raise CliError("mark file %s: 'registers_mwh' must be an object" % path)
    floors = {}
    for code in regs:
        if not isinstance(code, str) or not 0 < len(code) < 16:
            raise CliError("mark file %s: bad register name %r" % (path, code))
        floors[code] = _u64(regs, code, path)
    tamper = doc.get("tamper")
    if tamper is not None and not (isinstance(tamper, dict) and isinstance(tamper.get("active"), bool)
                                   and isinstance(tamper.get("count"), int)):
        raise CliError("mark file %s: 'tamper' must be null or {count, active}" % path)
    return Mark(seq, tag, epoch, floors, str(path), tamper)


def read(path):
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise CliError("mark file %s does not exist" % path) from None
    except (OSError, UnicodeError) as e:
        raise CliError("cannot read mark file %s: %s" % (path, getattr(e, "strerror", None) or e)) from None
    return parse(text, path)


def write(path, mark):
    """Write the mark file atomically (temporary file in the same directory, renamed)."""
    path = Path(path)
    text = json.dumps(mark.as_json(), indent=1) + "\n"
    try:
        fd, tmp = tempfile.mkstemp(prefix=".%s." % path.name, suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise CliError("cannot write %s: %s" % (path, e.strerror or e)) from None
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def mark_path_of(image):
    """Where the virtual board keeps an image's mark file: IMAGE.mark next to IMAGE and IMAGE.keys."""
    return Path(image).with_name(Path(image).name + ".mark")


# --- from a device over serial ----------------------------------------------------------------------------
# MicroPython, exec'd on the device: the running meter's own keystore (no second driver on the internal
# storage), else the board's. One line: 'M none', 'M damaged <reason>' or 'M <seq> <epoch> <tag hex>
# <count> (<name> <floor>)*', then 'T <tamper count> <active 0/1>'. Nothing secret is printed.
DEVICE_SCRIPT = r"""
def _umx_mark():
    import sys
    from binascii import hexlify
    a = sys.modules.get('umeter.app')
    m = a.meter() if a is not None else None
    ks = m.keystore if m is not None and m.keystore is not None else None
    if ks is None:
        import board
        ks = board.keystore()
    try:
        hw = ks.high_water()
    except Exception as e:
        print('M damaged', str(e).replace('\n', ' '))
        hw = False
    if hw is None:
        print('M none')
    elif hw is not False:
        regs = ' '.join('%s %d' % (k, v) for k, v in sorted(hw.registers.items()))
        print('M', hw.seq, hw.epoch, hexlify(hw.tag).decode(), len(hw.registers), regs)
    t = ks.tamper_log()
    print('T', t.count, 1 if t.active else 0)
_umx_mark()
del _umx_mark
"""


def parse_device_lines(lines, port):
    """The Mark (or None) from the device script's output lines."""
    m = [s for s in lines if s.startswith("M ")]
    t = [s for s in lines if s.startswith("T ")]
    if len(m) != 1 or len(t) != 1:
        raise CliError("the device on %s sent no high-water mark summary (is the umeter firmware "
                       "installed?)" % port)
    try:
        count, active = (int(v) for v in t[0].split()[1:3])
        tamper = {"count": count, "active": bool(active)}
        parts = m[0].split()
        if parts[1] == "none":
            return None
        if parts[1] == "damaged":
            return Mark(0, b"", source=port, tamper=tamper,
                        problem="the device's high-water mark is unreadable (%s)" % " ".join(parts[2:]))
        seq, epoch, tag, n = int(parts[1]), int(parts[2]), unhexlify(parts[3]), int(parts[4])
        rest = parts[5:]
        if len(rest) != 2 * n:
            raise ValueError
        regs = {rest[2 * i]: int(rest[2 * i + 1]) for i in range(n)}
    except (ValueError, IndexError):
        raise CliError("garbled high-water mark from the device on %s" % port) from None
    return Mark(seq, tag, epoch, regs, port, tamper)


def read_device(dev, port):
    """The Mark of the device behind an open remote.Remote session (or None: no checkpoint yet)."""
    lines = []
    dev.exec(DEVICE_SCRIPT, on_line=lines.append)
    return parse_device_lines(lines, port)
