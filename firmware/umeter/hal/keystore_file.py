# Keystore backend: one file per entry in a directory (simulator / virtual board; also the RP2040 backend
# on its internal littlefs). Writes go to a temporary file that is then renamed over the entry, so a
# power cut leaves the old or the new entry, never a torn one (littlefs and POSIX rename are atomic).
import os
from umeter.hal.keystore import KeyStore


class FileBackend:
    def __init__(self, directory):
        self._dir = directory.rstrip("/") or "/"
        try:
            os.stat(self._dir)
        except OSError:
            os.mkdir(self._dir)

    def __repr__(self):
        return "<FileBackend %s>" % self._dir

    def _path(self, name):
        return "%s/%s.bin" % (self._dir, name)

    def load(self, name):
        try:
            with open(self._path(name), "rb") as f:
                return f.read()
        except OSError:
            return None

    def save(self, name, data):
        path = self._path(name)
        tmp = path + ".tmp"
        with open(tmp, "wb") as f:
            f.write(data)
        try:
            os.rename(tmp, path)
        except OSError:  # filesystems whose rename does not replace (FAT): not atomic, last resort
            os.remove(path)
            os.rename(tmp, path)

    def erase(self, name):
        try:
            os.remove(self._path(name))
        except OSError:
            pass


def open_keystore(directory):
    """The keystore kept in `directory` (created if missing)."""
    return KeyStore(FileBackend(directory))
