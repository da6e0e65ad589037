"""Device master keys on the host: 32 random bytes in a file readable by its owner only (0600).

The key itself is never printed or logged; it is named by its key id (meterctl.sealing.key_id: a
SHA-256 prefix, the same id the device reports)."""
import os
import secrets
import stat
import tempfile
from pathlib import Path

from meterctl.sealing import key_id

KEY_LEN = 32
__all__ = ["KEY_LEN", "KeyFileError", "key_id", "new_key", "read_key_file", "write_key_file"]


class KeyFileError(Exception):
    """A key file cannot be written or read as asked (message names the file, never the key)."""


def new_key():
    return secrets.token_bytes(KEY_LEN)


def write_key_file(path, key, force=False):
    """Write key to path with mode 0600. Refuses an existing path unless force (then replaced atomically)."""
    path = Path(path)
    if len(key) != KEY_LEN:
        raise KeyFileError("a device master key is %d bytes" % KEY_LEN)
    if path.is_dir():
        raise KeyFileError("%s is a directory" % path)
    tmp = None
    try:
        if not force:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # O_EXCL: no overwrite race
        else:
            fd, tmp = tempfile.mkstemp(prefix=".%s." % path.name, dir=path.parent or ".")  # created 0600
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, bytes(key))
            os.fsync(fd)
        finally:
            os.close(fd)
        if tmp is not None:
            os.replace(tmp, path)
    except FileExistsError:
        raise KeyFileError("%s exists; refusing to overwrite a key (use --force)" % path) from None
    except OSError as e:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        raise KeyFileError("cannot write %s: %s" % (path, e.strerror or e)) from None


def read_private(path, error=KeyFileError):
    """The bytes of a key file only its owner can reach; raises `error` for a file other users can
    reach (with the chmod that fixes it) or one that cannot be read."""
    path = Path(path)
    try:
        st = path.stat()
        if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise error("%s is accessible by other users (mode %03o); run: chmod 600 %s"
                        % (path, stat.S_IMODE(st.st_mode), path))
        return path.read_bytes()
    except OSError as e:
        raise error("cannot read key file %s: %s" % (path, e.strerror or e)) from None


def read_key_file(path):
    """The key in path; refuses files others can read, and files that are not exactly 32 bytes."""
    path = Path(path)
    data = read_private(path)
    if len(data) != KEY_LEN:
        raise KeyFileError("%s is not a device key file (%d bytes, expected %d)" % (path, len(data), KEY_LEN))
    return data
