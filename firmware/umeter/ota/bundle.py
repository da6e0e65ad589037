# Update bundle format version 1 (BUNDLE.md): header, TLV manifest, signature block. Pure logic, the same
# code on MicroPython (device installer, boot stage) and CPython (meterctl bundle, tests). Parsers check
# every length before they slice, refuse anything unknown and raise BundleError (a ValueError) with a
# reason; encoders range-check every value first, because int.to_bytes truncates silently on MicroPython.
import hashlib
from binascii import hexlify

MAGIC = b"UMTRBNDL"
FORMAT_VERSION = 0x01
MANIFEST_VERSION = 0x01
HEADER_LEN = 14
MAX_MANIFEST = 8192
MAX_SIGBLOCK = 16384
MAX_SIGNATURES = 4
MAX_FILES = 96
MAX_FILE_SIZE = 1 << 20
MAX_KEY_OPS = 8
MAX_BOARDS = 16

TAG_PRODUCT = 0x01
TAG_BOARDS = 0x02
TAG_VERSION = 0x03
TAG_COUNTER = 0x04
TAG_ISSUED = 0x05
TAG_EXPIRES = 0x06
TAG_ARCH = 0x07
TAG_FILE = 0x08
TAG_POLICY = 0x09
TAG_KEY = 0x0A
_LAST_TAG = TAG_KEY
_REPEATABLE = (TAG_FILE, TAG_KEY)
_REQUIRED = (TAG_PRODUCT, TAG_BOARDS, TAG_VERSION, TAG_COUNTER, TAG_ISSUED, TAG_EXPIRES, TAG_ARCH, TAG_FILE)
_TAG_NAMES = ("", "PRODUCT", "BOARDS", "VERSION", "COUNTER", "ISSUED", "EXPIRES", "ARCH", "FILE", "POLICY",
              "KEY")

ALG_ED25519 = 0x01
ALG_LMS = 0x02
ALG_NAMES = {ALG_ED25519: "ed25519", ALG_LMS: "lms"}
PUBLIC_KEY_LEN = {ALG_ED25519: 32, ALG_LMS: 56}
ED25519_SIG_LEN = 64
KEY_ID_LEN = 8

POLICY_ED25519 = 0x01
POLICY_LMS = 0x02
POLICY_HYBRID = 0x03
POLICY_NAMES = {POLICY_ED25519: "ed25519", POLICY_LMS: "lms", POLICY_HYBRID: "hybrid"}

KEY_ADD = 0x01
KEY_REVOKE = 0x02
KEY_OP_NAMES = {KEY_ADD: "add", KEY_REVOKE: "revoke"}

ARCHES = ("xtensawin", "armv6m", "x64", "x86", "py")

# RFC 8554 SHA-256 parameter sets only (the device hashes with hashlib.sha256; no SHAKE, no 192-bit).
# LMS type -> tree height h (m = 32); LM-OTS type -> chain count p (n = 32).
LMS_HEIGHTS = {5: 5, 6: 10, 7: 15, 8: 20, 9: 25}
LMOTS_P = {1: 265, 2: 133, 3: 67, 4: 34}
LMOTS_W = {1: 1, 2: 2, 3: 4, 4: 8}

SIGNED_PREFIX = b"umeter bundle v1\x00"
KEY_ID_PREFIX = b"umeter ota key v1"

_NAME_CHARS = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-."


class BundleError(ValueError):
    """A bundle, manifest or signature block that this firmware refuses; the message says why."""


class Manifest:
    """The parsed manifest: plain values, nothing computed lazily."""

    def __init__(self, product, boards, version, counter, issued, expires, arch, files, policy, key_ops):
        self.product = product      # str
        self.boards = boards        # tuple of str
        self.version = version      # str, shown only
        self.counter = counter      # int, security counter
        self.issued = issued        # int, Unix seconds
        self.expires = expires      # int, Unix seconds
        self.arch = arch            # str, one of ARCHES
        self.files = files          # list of (path str, size int, sha256 bytes), manifest order
        self.policy = policy        # None or POLICY_*
        self.key_ops = key_ops      # list of (KEY_ADD|KEY_REVOKE, alg, public key bytes)

    def payload_size(self):
        total = 0
        for f in self.files:
            total += f[1]
        return total


def _u(buf, at, n):
    # Big-endian unsigned int of buf[at:at+n]; the caller has checked the length.
    v = 0
    for i in range(at, at + n):
        v = (v << 8) | buf[i]
    return v


def _be(value, n, what):
    if not isinstance(value, int) or value < 0 or value >= (1 << (8 * n)):
        raise BundleError("%s %r does not fit in %d bytes" % (what, value, n))
    return value.to_bytes(n, "big")


def _hex(b):
    return hexlify(bytes(b)).decode()


# -- header -------------------------------------------------------------------------------------------

def parse_header(data):
    """(manifest_len, sigblock_len) from the bundle's first HEADER_LEN bytes."""
    if len(data) < HEADER_LEN:
        raise BundleError("header: %d bytes, need %d" % (len(data), HEADER_LEN))
    if bytes(data[0:8]) != MAGIC:
        raise BundleError("header: not an umeter bundle (bad magic)")
    if data[8] != FORMAT_VERSION:
        raise BundleError("header: unknown format version 0x%02x" % data[8])
    if data[9] != 0:
        raise BundleError("header: reserved byte is 0x%02x, must be 0x00" % data[9])
    manifest_len = _u(data, 10, 2)
    sigblock_len = _u(data, 12, 2)
    if not 1 <= manifest_len <= MAX_MANIFEST:
        raise BundleError("header: manifest_len %d outside 1..%d" % (manifest_len, MAX_MANIFEST))
    if not 1 <= sigblock_len <= MAX_SIGBLOCK:
        raise BundleError("header: sigblock_len %d outside 1..%d" % (sigblock_len, MAX_SIGBLOCK))
    return manifest_len, sigblock_len


def encode_header(manifest_len, sigblock_len):
    if not 1 <= manifest_len <= MAX_MANIFEST:
        raise BundleError("header: manifest_len %d outside 1..%d" % (manifest_len, MAX_MANIFEST))
    if not 1 <= sigblock_len <= MAX_SIGBLOCK:
        raise BundleError("header: sigblock_len %d outside 1..%d" % (sigblock_len, MAX_SIGBLOCK))
    return MAGIC + bytes((FORMAT_VERSION, 0)) + _be(manifest_len, 2, "manifest_len") + \
        _be(sigblock_len, 2, "sigblock_len")


# -- manifest -----------------------------------------------------------------------------------------

def _name(value, lo, hi, what, chars=_NAME_CHARS):
    # ASCII string of allowed characters, lo..hi bytes.
    n = len(value)
    if not lo <= n <= hi:
        raise BundleError("manifest: %s is %d bytes, allowed %d..%d" % (what, n, lo, hi))
    for b in value:
        if chars is None:
            if not 0x21 <= b <= 0x7E:
                raise BundleError("manifest: %s has a byte 0x%02x outside printable ASCII" % (what, b))
        elif b not in chars:
            raise BundleError("manifest: %s has a byte 0x%02x not allowed" % (what, b))
    return str(value, "ascii")


def check_path(path):
    """Refuse a FILE path BUNDLE.md does not allow (str, bytes or memoryview); returns it as str. Scans in
    place: the only allocation is the returned string."""
    raw = path.encode() if isinstance(path, str) else path
    n = len(raw)
    if not 1 <= n <= 64:
        raise BundleError("manifest: FILE path of %d bytes, allowed 1..64" % n)
    for i in range(n):
        c = raw[i]
        if c != 0x2F and c not in _NAME_CHARS:
            raise BundleError("manifest: FILE path %r has a byte 0x%02x not allowed" % (bytes(raw), c))
    text = str(raw, "ascii")
    if text[0] == "/" or text[0] == ".":
        raise BundleError("manifest: FILE path %r not allowed (starts with %r)" % (text, text[0]))
    start = 0
    while start <= n:
        cut = text.find("/", start)
        end = n if cut < 0 else cut
        length = end - start
        if length == 0 or (length == 1 and text.startswith(".", start)) or \
                (length == 2 and text.startswith("..", start)):
            raise BundleError("manifest: FILE path %r not allowed (empty, . or .. component)" % text)
        start = end + 1
    if text == "main.py" or text == "main.mpy":
        raise BundleError("manifest: FILE path %r not allowed (the boot stage is never in a bundle)" % text)
    return text


def _check_lms_public_key(pub, what):
    lms_type = _u(pub, 0, 4)
    ots_type = _u(pub, 4, 4)
    if lms_type not in LMS_HEIGHTS:
        raise BundleError("%s: unknown LMS type 0x%08x" % (what, lms_type))
    if ots_type not in LMOTS_P:
        raise BundleError("%s: unknown LM-OTS type 0x%08x" % (what, ots_type))


def _module_stem(path):
    # "a/b.py" and "a/b.mpy" -> "a/b" (MicroPython imports X.py before X.mpy); None for other files.
    if path.endswith(".py"):
        return path[:-3]
    if path.endswith(".mpy"):
        return path[:-4]
    return None


def _check_files(files):
    # Sets of the path strings the result keeps anyway; one short string per module stem and directory.
    paths = set()
    stems = set()
    dirs = set()
    has_board = False
    has_package = False
    for f in files:
        path = f[0]
        if path in paths:
            raise BundleError("manifest: FILE path %r appears twice" % path)
        paths.add(path)
        stem = _module_stem(path)
        if stem is not None:
            if stem in stems:
                raise BundleError("manifest: FILE %r and another %s.py/.mpy both present (one would shadow "
                                  "the other)" % (path, stem))
            stems.add(stem)
        cut = path.find("/")
        while cut > 0:
            dirs.add(path[:cut])
            cut = path.find("/", cut + 1)
        if path == "board.py" or path == "board.mpy":
            has_board = True
        elif path.startswith("umeter/"):
            has_package = True
    for d in dirs:
        if d in paths:
            raise BundleError("manifest: FILE %r is also a directory of another FILE" % d)
    if not has_board:
        raise BundleError("manifest: no board.py or board.mpy in FILE list")
    if not has_package:
        raise BundleError("manifest: no file of the umeter/ package in FILE list")


def parse_manifest(data):
    """A Manifest from the manifest bytes (at most MAX_MANIFEST); BundleError on anything not in BUNDLE.md."""
    n = len(data)
    if not 1 <= n <= MAX_MANIFEST:
        raise BundleError("manifest: %d bytes, allowed 1..%d" % (n, MAX_MANIFEST))
    mv = memoryview(data)
    if mv[0] != MANIFEST_VERSION:
        raise BundleError("manifest: unknown manifest version 0x%02x" % mv[0])
    values = [None] * (_LAST_TAG + 1)
    files = []
    key_ops = []
    last = 0
    at = 1
    while at < n:
        if n - at < 3:
            raise BundleError("manifest: truncated field header at offset %d" % at)
        tag = mv[at]
        length = _u(mv, at + 1, 2)
        at += 3
        if tag == 0 or tag > _LAST_TAG:
            raise BundleError("manifest: unknown tag 0x%02x" % tag)
        if length > n - at:
            raise BundleError("manifest: %s field of %d bytes runs past the end" % (_TAG_NAMES[tag], length))
        if tag < last or (tag == last and tag not in _REPEATABLE):
            if tag == last:
                raise BundleError("manifest: duplicate %s" % _TAG_NAMES[tag])
            raise BundleError("manifest: %s out of order (after %s)" % (_TAG_NAMES[tag], _TAG_NAMES[last]))
        last = tag
        value = mv[at:at + length]
        at += length
        if tag == TAG_FILE:
            files.append(_parse_file(value, len(files)))
        elif tag == TAG_KEY:
            key_ops.append(_parse_key_op(value, len(key_ops)))
        else:
            values[tag] = _parse_single(tag, value)
    for tag in _REQUIRED:
        if tag == TAG_FILE:
            if not files:
                raise BundleError("manifest: no FILE")
        elif values[tag] is None:
            raise BundleError("manifest: missing %s" % _TAG_NAMES[tag])
    if values[TAG_EXPIRES] <= values[TAG_ISSUED]:
        raise BundleError("manifest: EXPIRES %d not after ISSUED %d"
                          % (values[TAG_EXPIRES], values[TAG_ISSUED]))
    _check_files(files)
    return Manifest(values[TAG_PRODUCT], values[TAG_BOARDS], values[TAG_VERSION], values[TAG_COUNTER],
                    values[TAG_ISSUED], values[TAG_EXPIRES], values[TAG_ARCH], files, values[TAG_POLICY],
                    key_ops)


def _parse_single(tag, value):
    n = len(value)
    if tag == TAG_PRODUCT:
        return _name(value, 1, 32, "PRODUCT")
    if tag == TAG_BOARDS:
        return _parse_boards(value)
    if tag == TAG_VERSION:
        return _name(value, 1, 32, "VERSION", None)
    if tag in (TAG_COUNTER, TAG_ISSUED, TAG_EXPIRES):
        if n != 4:
            raise BundleError("manifest: %s is %d bytes, must be 4" % (_TAG_NAMES[tag], n))
        return _u(value, 0, 4)
    if tag == TAG_ARCH:
        arch = _name(value, 1, 16, "ARCH")
        if arch not in ARCHES:
            raise BundleError("manifest: unknown ARCH %r" % arch)
        return arch
    # TAG_POLICY (the only other single tag)
    if n != 1:
        raise BundleError("manifest: POLICY is %d bytes, must be 1" % n)
    if value[0] not in POLICY_NAMES:
        raise BundleError("manifest: unknown POLICY 0x%02x" % value[0])
    return value[0]


def _parse_boards(value):
    n = len(value)
    if n < 1:
        raise BundleError("manifest: BOARDS is empty")
    count = value[0]
    if not 1 <= count <= MAX_BOARDS:
        raise BundleError("manifest: BOARDS count %d outside 1..%d" % (count, MAX_BOARDS))
    boards = []
    at = 1
    for _ in range(count):
        if at >= n:
            raise BundleError("manifest: BOARDS truncated")
        blen = value[at]
        at += 1
        if blen > n - at:
            raise BundleError("manifest: BOARDS name runs past the field")
        name = _name(value[at:at + blen], 1, 32, "board name")
        at += blen
        if name in boards:
            raise BundleError("manifest: board %r listed twice" % name)
        boards.append(name)
    if at != n:
        raise BundleError("manifest: BOARDS has %d bytes after its %d names" % (n - at, count))
    return tuple(boards)


def _parse_file(value, index):
    if index >= MAX_FILES:
        raise BundleError("manifest: more than %d FILE fields" % MAX_FILES)
    n = len(value)
    if n < 37:
        raise BundleError("manifest: FILE field of %d bytes, need size, sha256 and a path" % n)
    size = _u(value, 0, 4)
    if size > MAX_FILE_SIZE:
        raise BundleError("manifest: FILE size %d over %d" % (size, MAX_FILE_SIZE))
    path = check_path(value[36:])
    return (path, size, bytes(value[4:36]))


def _parse_key_op(value, index):
    if index >= MAX_KEY_OPS:
        raise BundleError("manifest: more than %d KEY fields" % MAX_KEY_OPS)
    if len(value) < 2:
        raise BundleError("manifest: KEY field of %d bytes" % len(value))
    op = value[0]
    alg = value[1]
    if op not in KEY_OP_NAMES:
        raise BundleError("manifest: unknown KEY op 0x%02x" % op)
    if alg not in ALG_NAMES:
        raise BundleError("manifest: KEY of unknown algorithm 0x%02x" % alg)
    pub = value[2:]
    if len(pub) != PUBLIC_KEY_LEN[alg]:
        raise BundleError("manifest: %s public key of %d bytes, must be %d"
                          % (ALG_NAMES[alg], len(pub), PUBLIC_KEY_LEN[alg]))
    if alg == ALG_LMS:
        _check_lms_public_key(pub, "manifest: KEY")
    return (op, alg, bytes(pub))


def _field(tag, value):
    return bytes((tag,)) + _be(len(value), 2, "field length") + value


def encode_manifest(boards, version, counter, issued, expires, arch, files, policy=None, key_ops=(),
                    product="umeter"):
    """Manifest bytes; files = [(path, size, sha256)], key_ops = [(op, alg, public key)].
    The result is parsed back before it is returned: an encoder never writes what a parser refuses."""
    out = [bytes((MANIFEST_VERSION,)), _field(TAG_PRODUCT, product.encode())]
    bl = [_be(len(boards), 1, "board count")]
    for b in boards:
        raw = b.encode()
        bl.append(_be(len(raw), 1, "board name length") + raw)
    out.append(_field(TAG_BOARDS, b"".join(bl)))
    out.append(_field(TAG_VERSION, version.encode()))
    out.append(_field(TAG_COUNTER, _be(counter, 4, "COUNTER")))
    out.append(_field(TAG_ISSUED, _be(issued, 4, "ISSUED")))
    out.append(_field(TAG_EXPIRES, _be(expires, 4, "EXPIRES")))
    out.append(_field(TAG_ARCH, arch.encode()))
    for path, size, digest in files:
        if len(digest) != 32:
            raise BundleError("manifest: FILE %r sha256 of %d bytes" % (path, len(digest)))
        out.append(_field(TAG_FILE, _be(size, 4, "FILE size") + bytes(digest) + check_path(path).encode()))
    if policy is not None:
        out.append(_field(TAG_POLICY, _be(policy, 1, "POLICY")))
    for op, alg, pub in key_ops:
        out.append(_field(TAG_KEY, _be(op, 1, "KEY op") + _be(alg, 1, "KEY alg") + bytes(pub)))
    data = b"".join(out)
    parse_manifest(data)
    return data


# -- signature block ----------------------------------------------------------------------------------

def lms_signature_info(sig):
    """(q, lms type, ots type) of an RFC 8554 LMS signature whose length and types this format allows."""
    n = len(sig)
    if n < 8:
        raise BundleError("sigblock: LMS signature of %d bytes" % n)
    q = _u(sig, 0, 4)
    ots_type = _u(sig, 4, 4)
    if ots_type not in LMOTS_P:
        raise BundleError("sigblock: unknown LM-OTS type 0x%08x" % ots_type)
    at = 8 + 32 * (LMOTS_P[ots_type] + 1)
    if n < at + 4:
        raise BundleError("sigblock: LMS signature of %d bytes too short for its LM-OTS type" % n)
    lms_type = _u(sig, at, 4)
    if lms_type not in LMS_HEIGHTS:
        raise BundleError("sigblock: unknown LMS type 0x%08x" % lms_type)
    h = LMS_HEIGHTS[lms_type]
    if n != at + 4 + 32 * h:
        raise BundleError("sigblock: LMS signature of %d bytes, its types need %d" % (n, at + 4 + 32 * h))
    if q >= (1 << h):
        raise BundleError("sigblock: LMS leaf index %d outside the tree (height %d)" % (q, h))
    return q, lms_type, ots_type


def parse_sigblock(data, allow_empty=False):
    """[(alg, key_id, signature)] from the signature block bytes. allow_empty: accept count 0, the unsigned
    bundle `meterctl bundle build` writes (host only: a device never passes it)."""
    n = len(data)
    if not 1 <= n <= MAX_SIGBLOCK:
        raise BundleError("sigblock: %d bytes, allowed 1..%d" % (n, MAX_SIGBLOCK))
    mv = memoryview(data)
    count = mv[0]
    if count == 0 and not allow_empty:
        raise BundleError("sigblock: bundle is unsigned")
    if count > MAX_SIGNATURES:
        raise BundleError("sigblock: %d signatures, at most %d" % (count, MAX_SIGNATURES))
    entries = []
    at = 1
    for i in range(count):
        if n - at < 11:
            raise BundleError("sigblock: entry %d truncated" % i)
        alg = mv[at]
        if alg not in ALG_NAMES:
            raise BundleError("sigblock: entry %d has unknown algorithm 0x%02x" % (i, alg))
        kid = bytes(mv[at + 1:at + 9])
        sig_len = _u(mv, at + 9, 2)
        at += 11
        if sig_len > n - at:
            raise BundleError("sigblock: entry %d signature of %d bytes runs past the block" % (i, sig_len))
        sig = bytes(mv[at:at + sig_len])
        at += sig_len
        if alg == ALG_ED25519:
            if sig_len != ED25519_SIG_LEN:
                raise BundleError("sigblock: Ed25519 signature of %d bytes, must be 64" % sig_len)
        else:
            lms_signature_info(sig)
        for other in entries:
            if other[0] == alg and other[1] == kid:
                raise BundleError("sigblock: key %s signs twice" % _hex(kid))
        entries.append((alg, kid, sig))
    if at != n:
        raise BundleError("sigblock: %d bytes after the last entry" % (n - at))
    return entries


def encode_sigblock(entries):
    """Signature block bytes from [(alg, key_id, signature)]; an empty list makes an unsigned block."""
    if len(entries) > MAX_SIGNATURES:
        raise BundleError("sigblock: %d signatures, at most %d" % (len(entries), MAX_SIGNATURES))
    out = [bytes((len(entries),))]
    for alg, kid, sig in entries:
        if len(kid) != KEY_ID_LEN:
            raise BundleError("sigblock: key id of %d bytes" % len(kid))
        out.append(_be(alg, 1, "alg") + bytes(kid) + _be(len(sig), 2, "signature length") + bytes(sig))
    data = b"".join(out)
    parse_sigblock(data, allow_empty=True)
    return data


# -- what is signed, key and software ids -------------------------------------------------------------

def signed_message(manifest_bytes):
    """M: the 49 bytes every signature of the block signs."""
    return SIGNED_PREFIX + hashlib.sha256(manifest_bytes).digest()


def key_id(alg, public_key):
    """The 8-byte key id of a public key (bytes)."""
    if alg not in PUBLIC_KEY_LEN:
        raise BundleError("unknown algorithm 0x%02x" % alg)
    if len(public_key) != PUBLIC_KEY_LEN[alg]:
        raise BundleError("%s public key of %d bytes, must be %d"
                          % (ALG_NAMES[alg], len(public_key), PUBLIC_KEY_LEN[alg]))
    if alg == ALG_LMS:
        _check_lms_public_key(public_key, "key")
    h = hashlib.sha256(KEY_ID_PREFIX)
    h.update(bytes((alg,)))
    h.update(public_key)
    return h.digest()[:KEY_ID_LEN]


def software_id(manifest_bytes):
    """The app's software identifier: SHA-256(manifest) as 64 lowercase hex characters."""
    return _hex(hashlib.sha256(manifest_bytes).digest())
