"""`meterctl export` engine: read sealed journal records (flash image file or device), verify every seal
and the chain (meterctl.sealing), decrypt, decode (umeter.records, engine.decode_profile), and render
CSV or JSON with OBIS-named columns.

The image is parsed by the firmware's own Journal class (imported through meterctl.mpcompat) over a
read-only file device: the host reads exactly what the meter reads and never writes to the image.
From a device, a small script exec'd over serial (DEVICE_SCRIPT) walks the journal in chunks and prints
`R <seq> <hex>` lines; the host does all verification.

Verdicts (ExportFailure.code, documented in `meterctl export --help`; meterctl.export_verify):
  EXIT_TAMPER     a seal or the chain fails (altered, deleted, reordered, replayed or spliced records);
                  the oldest record neither starts the chain nor is the oldest a sealed retention record
                  keeps (records deleted or damaged at the oldest end); the high-water mark's checkpoint
                  (--key-dir, --mark FILE, --port: the device's own) is missing, replaced, unverifiable or
                  carries registers below the mark's floors, or the journal ends before it (rollback,
                  newest records deleted); the mark itself is unreadable; a key mismatch a re-key cannot
                  explain; an active tamper log in the meter's keystore (--key-dir, --mark, --port). With
                  strict=True also: a tamper event the meter sealed into the journal.
  EXIT_WRONG_KEY  the key opens no record, or opens some but not whole key epochs at one end that chain
                  cleanly to the rest (a re-key the key file predates or postdates). Never with --key-dir
                  (the keystore holds every key) and never at or below the high-water mark.
  EXIT_INCOMPLETE only with strict=True: slots skipped by the journal CRC, withheld (unverifiable) chain
                  heads, or no high-water mark to vouch for the newest end.
Seqs are positional (JOURNAL.md revision 3): strictly increasing, not contiguous; a seq gap across which
the chain verifies is not a gap.
Input problems (missing/corrupt image, bad key or mark file, no device) raise meterctl.cli.CliError (exit 2).
No message ever contains key material: keys are named by their key id."""
import ast
import csv
import io
import json
import os
import tempfile
from pathlib import Path

from meterctl import export_verify, keyfiles, markfile, mpcompat, sealing
from meterctl.cli import CliError
from meterctl.keys import KeyFileError

EXIT_TAMPER = 3
EXIT_WRONG_KEY = 4
EXIT_INCOMPLETE = 5
SECTOR_SIZE = 4096   # W25Q family: 4 KiB erase sectors, 256-byte pages
PAGE_SIZE = 256
CHUNK_RECORDS = 400  # records per exec over serial
MAX_LINES = 5        # problems/gaps printed one per line, then a count

ROOT = mpcompat.ROOT
BOARDS = ROOT / "boards"

# OBIS-named columns (energy in Wh / varh, voltage in V, demand in W; see RECORDS.md and PROFILE.md).
ENERGY = ("1.8.0", "2.8.0", "3.8.0", "4.8.0")
VOLTAGE = ("32.3.0", "32.5.0", "32.6.0")
DEMAND = "1.6.0"
COLUMNS = ("seq", "key_epoch", "type", "t_end_s", "minutes", "flags") + ENERGY + VOLTAGE + (DEMAND,) + (
    "sat_samples", "t_samples", "event", "code", "arg", "text", "first_dropped", "last_dropped",
    "oldest_kept")


class ExportFailure(Exception):
    """A verdict that fails the export (tamper, wrong key, incomplete): message is one line."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code


# --- firmware modules under CPython ----------------------------------------------------------------------
def _fw():
    mpcompat.install()
    from umeter import records
    from umeter.metering import engine
    from umeter.store import StoreError, journal
    from umeter.store.region import partitions
    return records, engine, journal, StoreError, partitions


# --- flash image ------------------------------------------------------------------------------------------
class ImageDevice:
    """Read-only flash device (DESIGN 3.1) over an image file: program and erase refuse."""

    def __init__(self, path, sector_size=SECTOR_SIZE, page_size=PAGE_SIZE):
        self._f = open(path, "rb")
        self._f.seek(0, os.SEEK_END)
        self.size = self._f.tell()
        self.sector_size = sector_size
        self.page_size = page_size

    def read(self, addr, n):
        if addr < 0 or n < 0 or addr + n > self.size:
            raise ValueError("range 0x%x+%d outside the %d-byte image" % (addr, n, self.size))
        self._f.seek(addr)
        return self._f.read(n)

    def readinto(self, addr, buf):
        buf[:] = self.read(addr, len(buf))

    def program(self, addr, data):
        raise PermissionError("the flash image is opened read-only")

    def erase_sector(self, addr):
        raise PermissionError("the flash image is opened read-only")

    def close(self):
        self._f.close()


def _eval_table(node):
    """Evaluate a PARTITIONS literal: lists/tuples of str, int, None and int arithmetic (+ - *)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, str, type(None))):
        return node.value
    if isinstance(node, (ast.List, ast.Tuple)):
        return [_eval_table(e) for e in node.elts]
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Mult, ast.Add, ast.Sub)):
        a, b = _eval_table(node.left), _eval_table(node.right)
        if isinstance(a, int) and isinstance(b, int):
            if isinstance(node.op, ast.Mult):
                return a * b
            return a + b if isinstance(node.op, ast.Add) else a - b
    raise ValueError("not a plain partition table")


def board_partitions(board):
    """PARTITIONS of boards/<board>/board.py, read without importing it (it imports `machine`)."""
    path = BOARDS / board / "board.py"
    if not path.is_file():
        known = sorted(p.name for p in BOARDS.iterdir() if (p / "board.py").is_file())
        raise CliError("unknown board %r (known: %s)" % (board, ", ".join(known)))
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "PARTITIONS" for t in node.targets):
            return [tuple(e) for e in _eval_table(node.value)]
    raise CliError("board %s declares no PARTITIONS" % board)


class Snapshot:
    """What was read: records [(seq, sealed bytes)] oldest first, plus the journal's own figures."""

    def __init__(self, source, records, oldest_seq, last_seq, corrupt, sector_size, mark=None):
        self.source = source
        self.mark = mark          # the device's high-water mark (markfile.Mark), read over serial
        self.records = records
        self.oldest_seq = oldest_seq
        self.last_seq = last_seq
        self.corrupt = corrupt
        self.sector_size = sector_size


def read_image(path, board="sim"):
    records, engine, journal, StoreError, partitions = _fw()
    path = Path(path)
    if not path.exists():
        raise CliError("image %s does not exist" % path)
    if not path.is_file():
        raise CliError("image %s is not a file" % path)
    table = board_partitions(board)
    try:
        dev = ImageDevice(path)
    except OSError as e:
        raise CliError("cannot read image %s: %s" % (path, e.strerror or e)) from None
    try:
        if dev.size == 0 or dev.size % SECTOR_SIZE:
            raise CliError("image %s is %d bytes, not a whole number of %d-byte flash sectors"
                           % (path, dev.size, SECTOR_SIZE))
        try:
            region = partitions(dev, table)["journal"]
        except (ValueError, KeyError) as e:
            raise CliError("image %s does not fit board %s's partition table (%s)"
                           % (path, board, e)) from None
        try:
            j = journal.Journal(region)
            recs = list(j.records())
            st = j.stats()
        except StoreError as e:
            raise CliError("image %s is not a umeter flash image (journal: %s)" % (path, e)) from None
        if not recs and st["usable_sectors"] == 0:
            raise CliError("image %s has no usable journal sector (every sector header is zeroed)" % path)
        return Snapshot(str(path), recs, st["oldest_seq"], st["last_seq"], st["corrupt_skipped"], SECTOR_SIZE)
    finally:
        dev.close()


# --- from a device over serial: meterctl.export_device ---------------------------------------------------
def read_device(port, timeout=10.0, progress=None, chunk=CHUNK_RECORDS):
    """The device's journal records and its high-water mark over serial (meterctl.export_device)."""
    from meterctl import export_device

    return export_device.read_device(port, timeout=timeout, progress=progress, chunk=chunk)


# --- keys -------------------------------------------------------------------------------------------------
class Keys:
    """A keyring for sealing.Opener plus what may be shown about it (key ids); with a keystore directory
    also the device's high-water mark (markfile.Mark) and complete=True: it holds every key the meter
    used, so no key mismatch can be a re-key the exporter does not know about."""

    def __init__(self, keyring, key_ids, mark=None, source="", complete=False):
        self.keyring = keyring
        self.key_ids = key_ids
        self.mark = mark
        self.source = source
        self.complete = complete


def keys_from_file(path):
    from meterctl.keys import KeyFileError, read_key_file

    try:
        master = read_key_file(path)
    except KeyFileError as e:
        raise CliError(str(e)) from None
    return Keys(sealing.Keyring(master), [sealing.key_id(master)], None, str(path))


class _StoreKeyring:
    """The firmware KeyStore as a host keyring: its KeyMissing becomes sealing.KeyMissing."""

    def __init__(self, store):
        self._store = store

    def __repr__(self):
        return "<keystore keyring>"

    def master_for(self, epoch):
        from umeter.crypto import KeyMissing

        try:
            return self._store.master_for(epoch)
        except KeyMissing as e:
            raise sealing.KeyMissing(str(e)) from None


def keys_from_dir(directory):
    """Keys (and the high-water mark) of a keystore_file directory, e.g. IMG.keys or <board dir>/keys."""
    mpcompat.install()
    from umeter.hal.keystore import KeyStore, KeystoreError

    d = Path(directory)
    if not d.is_dir():
        raise CliError("key directory %s does not exist" % d)
    try:
        store = KeyStore(markfile.ReadOnlyBackend(d))
        if not store.provisioned:
            if store.damage.get("keys"):
                raise CliError("key directory %s: %s" % (d, store.damage["keys"].split(":")[0]))
            raise CliError("key directory %s holds no device key (keys.bin missing)" % d)
        keyfiles.check_key_dir(d)  # modes as strict as --key's: other users must not reach the keys
        ids = [store.key_id()]
        mark = markfile.from_keystore(store, "key directory %s" % d)
    except KeystoreError as e:
        raise CliError("key directory %s: %s" % (d, e)) from None
    except KeyFileError as e:
        raise CliError(str(e)) from None
    except OSError as e:
        raise CliError("cannot read key directory %s: %s" % (d, e.strerror or e)) from None
    return Keys(_StoreKeyring(store), ids, mark, str(d), complete=True)


# --- verification (meterctl.export_verify) and the verdict -----------------------------------------------
Result, verify, decode_row = export_verify.Result, export_verify.verify, export_verify.decode_row


def verdict(res, strict=False):
    """Raise ExportFailure for a failing result; the message is the first problem plus a count."""
    problems = list(res.tamper)
    # The MCU-internal tamper log lasts until an authenticated reset to the original state: once the
    # meter has judged its flash tampered, every later export says so, whatever the flash holds now.
    problems += [(0, "the keystore of %s holds an active tamper log (%d tamper verdict(s) since its last "
                     "authenticated reset)" % (src, n)) for src, n in res.tamper_log]
    if strict:
        problems += [(seq, "the meter itself recorded tamper at seq %d: %s" % (seq, text))
                     for seq, text in res.device_tamper]
    if problems and not (res.wrong_key and not res.verified):  # a key that opens nothing: exit 4
        msg = problems[0][1]
        more = len(problems) - 1
        raise ExportFailure(EXIT_TAMPER, "TAMPER: %s%s" % (msg, " (and %d more problem%s)"
                                                          % (more, "s" if more > 1 else "") if more else ""))
    if res.wrong_key:
        seq = res.wrong_key[0][0]
        epochs = sorted({e for _, e, _ in res.wrong_key if e is not None})
        n = len(res.wrong_key)
        which = "key epoch%s %s" % ("s" if len(epochs) > 1 else "", ", ".join(map(str, epochs)))
        if res.verified:
            raise ExportFailure(EXIT_WRONG_KEY, "WRONG KEY: the key opens %d record(s) but not the %d "
                                "record(s) of %s from seq %d (sealed under another master key after a "
                                "re-key, or an altered record header; a high-water mark (--mark, --key-dir, "
                                "--port) tells them apart)" % (res.verified, n, which, seq))
        raise ExportFailure(EXIT_WRONG_KEY, "WRONG KEY: the key does not open the records of %s (key check "
                            "mismatch from seq %d; %d record%s): use the key this meter was provisioned with"
                            % (which, seq, n, "s" if n > 1 else ""))
    if strict:
        missing = []
        if res.skipped:
            missing.append("%d slot(s) skipped by the journal CRC" % res.skipped)
        if res.withheld:
            missing.append("%d unverifiable record(s)" % len(res.withheld))
        if not res.marks:
            missing.append("no high-water mark to vouch for the newest records (use --key-dir, --mark or "
                           "--port)")
        if missing:
            raise ExportFailure(EXIT_INCOMPLETE, "INCOMPLETE (--strict): " + "; ".join(missing))


def warnings(snapshot, res):
    """Lines for stderr that do not fail the export (without --strict)."""
    out = []
    if res.withheld:
        out.append("withheld: %d record(s) (seq %s) cannot be verified: their predecessor was dropped by "
                   "ring retention; not exported"
                   % (len(res.withheld), ", ".join(map(str, res.withheld[:5]))))
    if snapshot.corrupt and not res.tamper:
        out.append("journal: %d slot(s) failed the journal CRC and were skipped; the chain verifies across "
                   "them (torn writes from power cuts; --strict fails on them)" % snapshot.corrupt)
    elif snapshot.corrupt:
        out.append("journal: %d slot(s) failed the journal CRC and were skipped" % snapshot.corrupt)
    if not res.marks and res.verified:
        out.append("no high-water mark checked (--key-dir, --mark or --port give one): records removed at "
                   "the newest end cannot be detected")
    for seq, text in res.device_tamper[:MAX_LINES]:
        out.append("the meter recorded a tamper event at seq %d: %s" % (seq, text))
    for src, n in res.tamper_log:
        out.append("the keystore of %s holds an active tamper log (%d tamper verdict(s))" % (src, n))
    return out


def summary(snapshot, keys, res):
    return {"source": snapshot.source, "key_ids": keys.key_ids, "records_read": len(snapshot.records),
            "verified": res.verified, "exported": len(res.rows), "first_seq": res.first_seq,
            "last_seq": res.last_seq, "withheld": res.withheld, "journal_corrupt_skipped": snapshot.corrupt,
            "high_water_marks_checked": res.marks, "checks": res.notes,
            "retention_records": [s for s, _ in res.retention],
            "device_tamper_events": [s for s, _ in res.device_tamper],
            "device_tamper_log": [{"source": src, "count": n} for src, n in res.tamper_log]}


# --- output -----------------------------------------------------------------------------------------------
def render(snapshot, keys, res, fmt):
    if fmt == "json":
        doc = {"format": "umeter-export", "version": 1, "summary": summary(snapshot, keys, res),
               "units": {"1.8.0": "Wh", "2.8.0": "Wh", "3.8.0": "varh", "4.8.0": "varh", "32.3.0": "V",
                         "32.5.0": "V", "32.6.0": "V", "1.6.0": "W"},
               "records": res.rows}
        return json.dumps(doc, indent=1) + "\n"
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS, extrasaction="raise", lineterminator="\n")
    w.writeheader()
    for row in res.rows:
        w.writerow(row)
    return buf.getvalue()


def write_atomic(path, text):
    """Write text to path through a temporary file in the same directory, renamed on success."""
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=".%s." % path.name, suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise CliError("cannot write %s: %s" % (path, e.strerror or e)) from None
    try:
        with os.fdopen(fd, "w", newline="") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
