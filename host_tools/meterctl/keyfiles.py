"""Key directories on the host (a virtual board's keystore: IMG.keys or BOARD_DIR/keys) get the same
care as key files (meterctl.keys): the directory is its owner's only (no group/other bits), and so is
every file in it. Used by `meterctl sim` (which creates them) and meant for `export --key-dir`."""
import os
import stat
from pathlib import Path

from meterctl.keys import KeyFileError

DIR_MODE = 0o700
FILE_MODE = 0o600
_OTHERS = stat.S_IRWXG | stat.S_IRWXO


def check_key_dir(directory):
    """Refuse (KeyFileError) a key directory, or a file in it, that other users can reach, as
    keys.read_key_file refuses such a key file. A missing directory is left to the caller."""
    d = Path(directory)
    try:
        entries = [d] + sorted(p for p in d.iterdir() if not p.is_symlink())
        for p in entries:
            mode = p.stat().st_mode
            if mode & _OTHERS:
                want = "700" if p.is_dir() else "600"
                raise KeyFileError("%s is accessible by other users (mode %03o); run: chmod %s %s"
                                   % (p, stat.S_IMODE(mode), want, p))
    except FileNotFoundError:
        return
    except OSError as e:
        raise KeyFileError("cannot read key directory %s: %s" % (d, e.strerror or e)) from None


def tighten_key_dir(directory):
    """Give a key directory the virtual board made (possibly by an older version) owner-only modes."""
    d = Path(directory)
    if not d.is_dir():
        return
    os.chmod(d, DIR_MODE)
    for p in d.iterdir():
        if p.is_file() and not p.is_symlink():
            os.chmod(p, FILE_MODE)
