# Streaming installer (SLOTS.md section 5): bundle head -> verify -> files into the inactive slot, one
# chunk in RAM, hashed as they stream -> MANIFEST -> boot state switch (the one commit point). Serial push
# and HTTP fetch both feed it:
#     inst = Installer()                       # root/backend: the port's defaults (slots.py)
#     at = inst.begin(head)                    # head = header + manifest + sigblock; at: payload offset to
#     inst.write(chunk) ...                    #   send from (0, or where an interrupted install stopped)
#     software_id = inst.finish()              # the new app boots in trial mode at the next boot
# Every refusal raises Refused with the reason and is counted and queued as a "rejected" event; the
# active app is never touched.
import hashlib
import os

from umeter.ota import bundle
from umeter.ota import slots
from umeter.ota import trust as trustmod
from umeter.ota.verify import Refused, accept

CHUNK = 1024               # hashing buffer; callers feed chunks of any size
FLUSH_EVERY = 4096         # littlefs commits file data on flush: what a power cut can cost to re-send


def head_length(first):
    """Total head length (header + manifest + sigblock) from the bundle's first HEADER_LEN bytes."""
    m_len, s_len = bundle.parse_header(first)
    return bundle.HEADER_LEN + m_len + s_len


def _exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False


def _prune(d, keep, rel=""):
    """Remove every file of the slot directory whose path is not in `keep`."""
    for name, is_dir in slots.entries(d):
        path = rel + name
        if is_dir:
            _prune(d + "/" + name, keep, path + "/")
        elif path not in keep:
            os.remove(d + "/" + name)


def _makedirs(base, rel):
    parts = rel.split("/")[:-1]
    d = base
    for part in parts:
        d += "/" + part
        if not _exists(d):
            os.mkdir(d)


def _same_file(path, data):
    try:
        with open(path, "rb") as f:
            return f.read(len(data) + 1) == data
    except OSError:
        return False


class Installer:
    def __init__(self, root=None, backend=None, clock=0, attempts=slots.DEFAULT_ATTEMPTS, external=None):
        """external: {path: sink} for files that do not go into the slot (slots.EXTERNAL: the ESP32 image,
        esp32_fw.py); a sink has reserve(size), write(chunk), flush(), close() and commit() (after the
        switch)."""
        self._external = external or {}
        self._root = slots.default_root() if root is None else root
        self._backend = backend or slots.default_backend()
        self._clock = clock
        self._attempts = attempts
        self._buf = bytearray(CHUNK)
        self._m = None
        self._dead = None

    # -- refusing -----------------------------------------------------------------------------------
    def _refuse(self, reason, slot=None):
        self._close()
        self._dead = reason
        try:
            st = slots.load(self._backend)
            st.event(slots.EV_REJECTED, slot, 0, reason)
            slots.save(self._backend, st)
        except slots.BootStateError:
            pass  # the refusal stands; the damage is reported by the boot stage
        raise Refused(reason)

    def _close(self):
        f = getattr(self, "_f", None)
        if f is not None:
            f.close()
            self._f = None

    # -- head ---------------------------------------------------------------------------------------
    def begin(self, head):
        """Verify the bundle head and prepare the inactive slot; the payload offset to continue from."""
        head = bytes(head)
        try:
            if len(head) < bundle.HEADER_LEN or len(head) != head_length(head[:bundle.HEADER_LEN]):
                raise bundle.BundleError("bundle head of %d bytes does not match its header" % len(head))
            m_len, _ = bundle.parse_header(head)
        except bundle.BundleError as e:
            self._refuse(str(e))
        manifest = head[bundle.HEADER_LEN:bundle.HEADER_LEN + m_len]
        sigblock = head[bundle.HEADER_LEN + m_len:]
        try:
            trust = trustmod.load(self._backend)
            st = slots.load(self._backend)
        except (trustmod.TrustError, slots.BootStateError) as e:
            raise Refused("update state unusable: %s" % e)
        if trust is None:
            self._refuse("the update trust store is not provisioned")
        try:
            m = accept(trust, manifest, sigblock, self._clock)
            self._check_external(m)
        except Refused as e:
            self._refuse(str(e))
        sid = hashlib.sha256(manifest).digest()
        for i in range(2):
            if st.digests[i] == sid and (i == st.active or i == st.previous):
                self._refuse("this app is already installed in slot %s" % slots.NAMES[i])
        target = 0 if st.active is None else 1 - st.active
        d = slots.slot_dir(self._root, target)
        resume = st.digests[target] is None and (_same_file(d + "/" + slots.PENDING, head)
                                                  or _same_file(d + "/" + slots.MANIFEST, head))
        if not resume:
            # The fallback is about to be overwritten: unpin it first, so it is never booted half-written.
            st.digests[target] = None
            if st.previous == target:
                st.previous = None
            st.event(slots.EV_ATTEMPT, target, m.counter, m.version)
            slots.save(self._backend, st)
            if not _exists(d):
                os.mkdir(d)
            # Keep only files identical to this manifest's (cheap restarts, progress survives any cut),
            # then record which bundle the slot now holds: a resume may trust partial files after that.
            _prune(d, self._keep(d, m, False))
            with open(d + "/" + slots.PENDING, "wb") as f:
                f.write(head)
        else:
            if not _exists(d + "/" + slots.PENDING):
                os.rename(d + "/" + slots.MANIFEST, d + "/" + slots.PENDING)
            _prune(d, self._keep(d, m, True) + [slots.PENDING])
        self._m, self._manifest, self._target, self._dir, self._sid = m, manifest, target, d, sid
        self._total = m.payload_size()
        return self._resume_point()

    def _check_external(self, m):
        for i, (path, size, _) in enumerate(m.files):
            if path in slots.EXTERNAL:
                if path not in self._external:
                    raise Refused("%s is not installed into an app slot (use the firmware installer)" % path)
                if i != 0:
                    raise Refused("%s must be the bundle's first file" % path)
                self._external[path].reserve(size)

    def _keep(self, d, m, partial_ok):
        """Manifest paths whose file is complete and identical; with partial_ok also the first one that
        is shorter (this bundle's upload, cut short: its prefix is re-hashed and the final hash checks it)."""
        keep = []
        for path, size, digest in m.files:
            try:
                have, got = slots.hash_file(d + "/" + path, self._buf)
            except OSError:
                have, got = -1, None
            if have == size and got == digest:
                keep.append(path)
                continue
            if partial_ok and 0 <= have < size:
                keep.append(path)
            partial_ok = False  # files are written in order: only the first unfinished one can be partial
        return keep

    def _resume_point(self):
        """Skip the files already complete on the slot; reopen a partial one after re-hashing its prefix."""
        self._f = None
        self._pos = 0
        self._file = 0
        files = self._m.files
        while self._file < len(files) and files[self._file][0] not in self._external:
            path, size, digest = files[self._file]
            p = self._dir + "/" + path
            try:
                have, got = slots.hash_file(p, self._buf)
            except OSError:
                break
            if have == size and got == digest:
                self._pos += size
                self._file += 1
                continue
            if have >= size:
                os.remove(p)
                break
            self._h = hashlib.sha256()
            with open(p, "rb") as f:
                left = have
                while left:
                    n = f.readinto(self._buf)
                    if not n:
                        break
                    self._h.update(memoryview(self._buf)[:n])
                    left -= n
            self._f = open(p, "ab")
            self._in_file = have
            self._pos += have
            break
        self._since_flush = 0
        self._empty_files()
        return self._pos

    def payload_size(self):
        return self._total

    # -- payload ------------------------------------------------------------------------------------
    def _open_next(self):
        path = self._m.files[self._file][0]
        if path in self._external:
            self._f = self._external[path]
        else:
            _makedirs(self._dir, path)
            self._f = open(self._dir + "/" + path, "wb")
        self._h = hashlib.sha256()
        self._in_file = 0

    def _file_done(self):
        path, size, digest = self._m.files[self._file]
        self._close()
        if self._h.digest() != digest:
            if path not in self._external:
                os.remove(self._dir + "/" + path)
            self._refuse("file %s: SHA-256 does not match the manifest" % path, self._target)
        self._file += 1

    def _empty_files(self):
        files = self._m.files
        while self._f is None and self._file < len(files) and files[self._file][1] == 0:
            self._open_next()
            self._file_done()

    def write(self, data):
        """Stream payload bytes (any chunk size); returns the payload bytes accepted so far."""
        if self._dead is not None or self._m is None:
            raise Refused(self._dead or "begin() was not called")
        mv = memoryview(data)
        at = 0
        files = self._m.files
        while at < len(mv):
            if self._file >= len(files):
                self._refuse("bundle longer than its manifest says (%d bytes past the last file)"
                             % (len(mv) - at), self._target)
            if self._f is None:
                self._open_next()
            size = files[self._file][1]
            n = size - self._in_file
            if n > len(mv) - at:
                n = len(mv) - at
            part = mv[at:at + n]
            self._f.write(part)
            self._h.update(part)
            self._in_file += n
            self._pos += n
            self._since_flush += n
            at += n
            if self._in_file == size:
                self._file_done()
                self._empty_files()
            elif self._since_flush >= FLUSH_EVERY:
                self._f.flush()
                self._since_flush = 0
        return self._pos

    def finish(self):
        """All payload received: check the slot, write MANIFEST, switch slots. The new software id."""
        if self._dead is not None or self._m is None:
            raise Refused(self._dead or "begin() was not called")
        if self._pos != self._total or self._file != len(self._m.files):
            self._refuse("bundle truncated: %d of %d payload bytes" % (self._pos, self._total), self._target)
        try:
            slots.check_files(self._dir, self._m, self._buf, (slots.PENDING,))
        except Refused as e:
            self._refuse(str(e), self._target)
        os.rename(self._dir + "/" + slots.PENDING, self._dir + "/" + slots.MANIFEST)
        st = slots.load(self._backend)
        st.previous = st.active
        st.active = self._target
        st.trial = True
        st.attempts_left = st.max_attempts = self._attempts
        st.digests[self._target] = self._sid
        st.event(slots.EV_INSTALLED, self._target, self._m.counter, self._m.version)
        slots.save(self._backend, st)   # the commit point: from here the next boot starts the new app
        for sink in self._external.values():
            sink.commit()
        self._dead = "install finished"
        return bundle.software_id(self._manifest)
