"""One `meterctl sim` / `sim run` per board directory or flash image: a lock file holding the owner's pid.

    with SimLock(image_path, "image"):   # creates IMAGE.lock; CliError if a live process holds it
        ...
The lock is `<path>.lock` for an image, `<dir>/.vboard.lock` for a board directory. A lock whose pid no
longer runs (the owner was killed) is stale: it is removed and taken over. O_EXCL decides races."""
import os
import time
from pathlib import Path

from meterctl.cli import CliError


def lock_path(path, kind):
    path = Path(path)
    return path / ".vboard.lock" if kind == "board directory" else path.with_name(path.name + ".lock")


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True


def _owner(lock):
    try:
        return int(lock.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _young(lock):
    """A lock file without a pid yet may be one its owner is still writing."""
    try:
        return time.time() - lock.stat().st_mtime < 2.0
    except OSError:
        return False


class SimLock:
    def __init__(self, path, kind):
        self.path = Path(path)
        self.kind = kind
        self.lock = lock_path(path, kind)
        self.held = False

    def acquire(self):
        for _ in range(3):
            try:
                fd = os.open(self.lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                pid = _owner(self.lock)
                if pid is None and _young(self.lock):
                    raise CliError("%s %s is being locked by another meterctl sim (lock %s)"
                                   % (self.kind, self.path, self.lock)) from None
                if pid is not None and pid != os.getpid() and _alive(pid):
                    raise CliError("%s %s is in use by another meterctl sim (pid %d, lock %s)"
                                   % (self.kind, self.path, pid, self.lock)) from None
                try:
                    self.lock.unlink()  # stale: its owner is gone
                except FileNotFoundError:
                    pass
                continue
            except OSError as e:
                raise CliError("cannot lock %s %s: %s" % (self.kind, self.path, e.strerror or e)) from None
            with os.fdopen(fd, "w") as f:
                f.write("%d\n" % os.getpid())
            self.held = True
            return self
        raise CliError("cannot lock %s %s: lock %s keeps changing" % (self.kind, self.path, self.lock))

    def release(self):
        if self.held and _owner(self.lock) == os.getpid():
            self.lock.unlink()
        self.held = False

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()
