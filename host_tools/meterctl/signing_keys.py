"""Update-signing keys on the host: Ed25519 (`cryptography`) and single-tree LMS (`pyhsslms`), in the key
files of SIGNING_KEYS.md (private 0600, public `<file>.pub`).

LMS keys are stateful: each one-time leaf q may sign once. `LmsKey.sign` reserves the leaf on disk before
it computes the signature (new file: write, fsync, atomic rename, fsync the directory), so a crash at any
point burns at most the leaf being used and never releases a signature under a leaf the file has not
already moved past. pyhsslms' own persistence (HssLmsPrivateKey.sign) is not used: it signs first, then
rewrites the .prv file in place (truncate + write, no fsync, no rename), files keep the umask's mode, and a
failed save returns an empty signature instead of raising; a crash there can lose the key or replay a leaf.

The private key never leaves this module in a message: errors name the file and the key id only."""
import fcntl
import hashlib
import os
import secrets
from pathlib import Path

import pyhsslms
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from meterctl import mpcompat
from meterctl.keys import read_private

mpcompat.install()  # the bundle format code is the firmware's own module
from umeter.ota import bundle as fmt  # noqa: E402

PRIVATE_MAGIC = b"UMSK"
PUBLIC_MAGIC = b"UMPK"
FILE_VERSION = 1
CHECK_LEN = 32
LMS_TYPES = {"H5": 5, "H10": 6, "H15": 7, "H20": 8, "H25": 9}
OTS_TYPES = {"W1": 1, "W2": 2, "W4": 3, "W8": 4}
DEFAULT_LMS_TYPE = "H10"
DEFAULT_OTS_TYPE = "W4"
LMS_FIELDS_LEN = 4 + 4 + 16 + 32 + 32 + 4   # types, I, SEED, root T[1], next leaf
WARN_FRACTION = 0.10          # warn when fewer than 10 % of the leaves are left


class SigningKeyError(Exception):
    """A signing key file cannot be made, read or used as asked (never contains key material)."""


def _step(name):
    """Crash-injection point for tests (monkeypatched to raise); does nothing in use."""


def lms_type_name(lms_type, ots_type):
    h = fmt.LMS_HEIGHTS[lms_type]
    return "LMS_SHA256_M32_H%d/LMOTS_SHA256_N32_W%d" % (h, fmt.LMOTS_W[ots_type])


# -- file I/O -----------------------------------------------------------------------------------------

def _fsync_dir(directory):
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomic(path, data, mode, replace):
    """data into path: temporary file in the same directory (mode set before any byte is written), fsync,
    rename over path (or link when it must not exist), fsync the directory."""
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise SigningKeyError("%s is a directory" % path)
    tmp = directory / (".%s.%s.tmp" % (path.name, secrets.token_hex(4)))
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        try:
            os.fchmod(fd, mode)
            os.write(fd, data)
            _step("tmp-written")
            os.fsync(fd)
        finally:
            os.close(fd)
        _step("tmp-synced")
        if replace:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)      # fails if path exists: no overwrite race
            os.unlink(tmp)
        _step("renamed")
        _fsync_dir(directory)
        _step("dir-synced")
    except FileExistsError:
        raise SigningKeyError("%s exists; refusing to overwrite a key (use --force)" % path) from None
    except OSError as e:
        raise SigningKeyError("cannot write %s: %s" % (path, e.strerror or e)) from None
    finally:
        if tmp.exists():
            tmp.unlink()


def _remove_stale_temps(path):
    # Temporaries of this key file left by a crash mid-write (the caller holds the key's lock).
    path = Path(path)
    for stale in path.parent.glob(".%s.*.tmp" % path.name):
        stale.unlink()


def _read_private(path):
    path = Path(path)
    data = read_private(path, SigningKeyError)
    if len(data) < 6 + CHECK_LEN or data[:4] != PRIVATE_MAGIC:
        raise SigningKeyError("%s is not a signing key file" % path)
    if data[4] != FILE_VERSION:
        raise SigningKeyError("%s: unknown signing key file version %d" % (path, data[4]))
    body, check = data[:-CHECK_LEN], data[-CHECK_LEN:]
    if hashlib.sha256(body).digest() != check:
        raise SigningKeyError("%s is damaged (check value mismatch)" % path)
    return body[5], body[6:]


def _private_bytes(alg, fields):
    body = PRIVATE_MAGIC + bytes((FILE_VERSION, alg)) + fields
    return body + hashlib.sha256(body).digest()


def public_file_bytes(alg, public_key):
    return PUBLIC_MAGIC + bytes((FILE_VERSION, alg)) + public_key


def public_path(path):
    return Path(str(path) + ".pub")


def read_public(path):
    """(alg, public key) from a public key file, or from a private key file (its public half)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise SigningKeyError("cannot read key file %s: %s" % (path, e.strerror or e)) from None
    if data[:4] == PRIVATE_MAGIC:
        key = load(path)
        return key.alg, key.public_key
    if len(data) < 6 or data[:4] != PUBLIC_MAGIC or data[4] != FILE_VERSION:
        raise SigningKeyError("%s is not a public key file" % path)
    alg, pub = data[5], data[6:]
    try:
        fmt.key_id(alg, pub)   # checks alg, length and LMS types
    except ValueError as e:
        raise SigningKeyError("%s: %s" % (path, e)) from None
    return alg, pub


# -- keys ---------------------------------------------------------------------------------------------

class Ed25519Key:
    alg = fmt.ALG_ED25519

    def __init__(self, path, seed):
        self.path = Path(path)
        self._private = Ed25519PrivateKey.from_private_bytes(seed)
        self.public_key = self._private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self.key_id = fmt.key_id(self.alg, self.public_key)

    def describe(self):
        return "ed25519"

    def sign(self, message):
        """(signature, None): Ed25519 has no state."""
        return self._private.sign(message), None


class LmsKey:
    """A single-tree LMS private key file; `sign` moves its next leaf on disk before signing."""
    alg = fmt.ALG_LMS

    def __init__(self, path, lms_type, ots_type, ident, seed, root, next_q):
        self.path = Path(path)
        self.lms_type, self.ots_type = lms_type, ots_type
        self.ident, self._seed, self.root = ident, seed, root
        self.next_q = next_q
        self.total = 1 << fmt.LMS_HEIGHTS[lms_type]
        self._tree = None
        self.public_key = lms_type.to_bytes(4, "big") + ots_type.to_bytes(4, "big") + ident + root
        self.key_id = fmt.key_id(fmt.ALG_LMS, self.public_key)

    def describe(self):
        return "lms %s, %d of %d signatures left" % (lms_type_name(self.lms_type, self.ots_type),
                                                      self.total - self.next_q, self.total)

    def tree(self, progress=None):
        """The pyhsslms key: computes all 2^h leaves (H10/W4 0.7 s here, x32 per 5 more levels, W8 ~8x W4).
        progress(done, total) is called as leaves are computed."""
        if self._tree is None:
            with _LeafCounter(self.total, progress):
                tree = pyhsslms.LmsPrivateKey(self.lms_type.to_bytes(4, "big"),
                                              self.ots_type.to_bytes(4, "big"), SEED=self._seed, I=self.ident,
                                              q=0)
            if tree.pub != self.root:
                raise SigningKeyError("%s is damaged: its seed does not give its public key" % self.path)
            self._tree = tree
        return self._tree

    def sign(self, message):
        """(signature, leaves left after it). Under an exclusive lock: re-read the file, refuse an exhausted
        key, save next_q + 1 durably, only then compute and check the signature."""
        tree = self.tree()
        with _locked(self.path):
            alg, fields = _read_private(self.path)
            current = _parse_lms(self.path, fields)
            if current.public_key != self.public_key or current._seed != self._seed:
                raise SigningKeyError("%s changed while in use" % self.path)
            q = current.next_q
            _remove_stale_temps(self.path)
            if q >= self.total:
                raise SigningKeyError("LMS key %s is exhausted (all %d one-time signatures used): make a new "
                                      "key and rotate it in" % (self.path, self.total))
            _step("reserve")
            _write_atomic(self.path, _lms_file_bytes(self.lms_type, self.ots_type, self.ident, self._seed,
                                                     self.root, q + 1), 0o600, replace=True)
            self.next_q = q + 1
        _step("reserved")
        tree.q = q
        sig = tree.sign(message)
        _step("signed")
        if fmt.lms_signature_info(sig)[0] != q or not tree.publicKey().verify(message, sig):
            raise SigningKeyError("LMS signature check failed for %s (leaf %d burnt)" % (self.path, q))
        _step("checked")
        return sig, self.total - q - 1


def _lms_file_bytes(lms_type, ots_type, ident, seed, root, next_q):
    return _private_bytes(fmt.ALG_LMS, lms_type.to_bytes(4, "big") + ots_type.to_bytes(4, "big") + ident
                          + seed + root + next_q.to_bytes(4, "big"))


def _parse_lms(path, fields):
    if len(fields) != LMS_FIELDS_LEN:
        raise SigningKeyError("%s is not an LMS key file (%d bytes of key fields)" % (path, len(fields)))
    lms_type = int.from_bytes(fields[0:4], "big")
    ots_type = int.from_bytes(fields[4:8], "big")
    if lms_type not in fmt.LMS_HEIGHTS or ots_type not in fmt.LMOTS_P:
        raise SigningKeyError("%s: unsupported LMS parameter set" % path)
    return LmsKey(path, lms_type, ots_type, fields[8:24], fields[24:56], fields[56:88],
                  int.from_bytes(fields[88:92], "big"))


class _locked:
    """Exclusive flock on the key's directory: two signers never reserve from the same file at once (the
    file itself is replaced by rename, so it cannot carry the lock)."""

    def __init__(self, path):
        self.directory = str(Path(path).parent) or "."

    def __enter__(self):
        self.fd = os.open(self.directory, os.O_RDONLY)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)


def load(path):
    """The signing key in a private key file (an LMS key's public key is computed on first use)."""
    alg, fields = _read_private(path)
    if alg == fmt.ALG_ED25519:
        if len(fields) != 32:
            raise SigningKeyError("%s is not an Ed25519 key file" % path)
        return Ed25519Key(path, fields)
    if alg == fmt.ALG_LMS:
        return _parse_lms(path, fields)
    raise SigningKeyError("%s: unknown signing algorithm %d" % (path, alg))


class _LeafCounter:
    """Reports pyhsslms' progress through a tree (it has no callback): counts its one-time public key
    computations, one per leaf, while the context is open."""

    def __init__(self, total, progress):
        self.total, self.progress, self.done = total, progress, 0

    def __enter__(self):
        if self.progress is None:
            return self
        cls = pyhsslms.LmotsPrivateKey
        self.original = cls.publicKey
        every = max(1, self.total // 100)
        counter = self

        def counting(ots_key):
            counter.done += 1
            if counter.done % every == 0 or counter.done == counter.total:
                counter.progress(counter.done, counter.total)
            return counter.original(ots_key)

        cls.publicKey = counting
        return self

    def __exit__(self, *exc):
        if self.progress is not None:
            pyhsslms.LmotsPrivateKey.publicKey = self.original


def new(path, alg, lms_type=DEFAULT_LMS_TYPE, ots_type=DEFAULT_OTS_TYPE, force=False, progress=None):
    """Create a private key file (0600) and its public key file (0644); returns the loaded key.
    progress(done, total): see LmsKey.tree."""
    path = Path(path)
    if alg == "ed25519":
        seed = secrets.token_bytes(32)
        private = _private_bytes(fmt.ALG_ED25519, seed)
        pub = Ed25519Key(path, seed).public_key
        code = fmt.ALG_ED25519
    elif alg == "lms":
        lt, ot = LMS_TYPES[lms_type.upper()], OTS_TYPES[ots_type.upper()]
        ident, seed = secrets.token_bytes(16), secrets.token_bytes(32)
        with _LeafCounter(1 << fmt.LMS_HEIGHTS[lt], progress):
            root = pyhsslms.LmsPrivateKey(lt.to_bytes(4, "big"), ot.to_bytes(4, "big"), SEED=seed,
                                          I=ident).pub
        pub = LmsKey(path, lt, ot, ident, seed, root, 0).public_key
        private = _lms_file_bytes(lt, ot, ident, seed, root, 0)
        code = fmt.ALG_LMS
    else:
        raise SigningKeyError("unknown algorithm %r (ed25519 or lms)" % alg)
    _write_atomic(path, private, 0o600, replace=force)
    _write_atomic(public_path(path), public_file_bytes(code, pub), 0o644, replace=True)
    return load(path)


def verify(alg, public_key, message, signature):
    """None if signature is good for message under public_key, else the reason (str)."""
    if alg == fmt.ALG_ED25519:
        try:
            Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
        except InvalidSignature:
            return "Ed25519 signature does not verify"
        return None
    try:
        q, lms_type, ots_type = fmt.lms_signature_info(signature)
    except ValueError as e:
        return str(e)
    # pyhsslms takes the LM-OTS type from the signature; RFC 8554 (algorithm 6a) wants the key's.
    key_types = (int.from_bytes(public_key[0:4], "big"), int.from_bytes(public_key[4:8], "big"))
    if (lms_type, ots_type) != key_types:
        return "LMS signature types %s differ from the key's" % lms_type_name(lms_type, ots_type)
    try:
        ok = pyhsslms.LmsPublicKey.deserialize(bytes(public_key)).verify(message, bytes(signature))
    except ValueError as e:
        return "LMS signature malformed: %s" % (e.args[0] if e.args else e)
    return None if ok else "LMS signature (leaf %d) does not verify" % q
