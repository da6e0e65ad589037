"""Update bundles on the host (firmware/umeter/ota/BUNDLE.md): build one for a board, sign it, verify it,
describe it. The byte format is umeter.ota.bundle's, the very code the device runs; this module adds the
payload, the files and the host crypto (meterctl.signing_keys)."""
import hashlib
import os
import tempfile
from pathlib import Path

from meterctl import deploy, mpcompat, signing_keys

mpcompat.install()  # the bundle format code is the firmware's own module
from umeter.ota import bundle as fmt  # noqa: E402
from umeter.ota.bundle import BundleError  # noqa: E402

__all__ = ["Bundle", "BundleError", "read", "encode", "build_files", "build", "sign", "verify", "describe"]


class Bundle:
    """The parts of a bundle file: manifest bytes and its parse, signature entries, payload bytes."""

    def __init__(self, manifest_bytes, manifest, entries, payload):
        self.manifest_bytes = manifest_bytes
        self.manifest = manifest
        self.entries = entries      # [(alg, key_id, signature)], may be empty (unsigned)
        self.payload = payload      # bytes after the signature block, as found


def read(data):
    """Split and parse a bundle (signed or not). The payload is not checked here: see payload_problem."""
    data = bytes(data)
    manifest_len, sigblock_len = fmt.parse_header(data[:fmt.HEADER_LEN])
    end = fmt.HEADER_LEN + manifest_len + sigblock_len
    if len(data) < end:
        raise BundleError("bundle: %d bytes, shorter than its header, manifest and signature block (%d)"
                          % (len(data), end))
    manifest_bytes = data[fmt.HEADER_LEN:fmt.HEADER_LEN + manifest_len]
    manifest = fmt.parse_manifest(manifest_bytes)
    entries = fmt.parse_sigblock(data[fmt.HEADER_LEN + manifest_len:end], allow_empty=True)
    return Bundle(manifest_bytes, manifest, entries, data[end:])


def payload_problem(b):
    """None if the payload is exactly the manifest's files, else the first reason it is not."""
    at = 0
    for path, size, digest in b.manifest.files:
        if len(b.payload) - at < size:
            return "payload: truncated in %s (%d of %d bytes)" % (path, max(0, len(b.payload) - at), size)
        if hashlib.sha256(b.payload[at:at + size]).digest() != digest:
            return "payload: %s does not match its SHA-256 in the manifest" % path
        at += size
    if len(b.payload) != at:
        return "payload: bundle longer than its manifest says (%d extra bytes)" % (len(b.payload) - at)
    return None


def encode(manifest_bytes, entries, payload):
    sigblock = fmt.encode_sigblock(entries)
    return fmt.encode_header(len(manifest_bytes), len(sigblock)) + manifest_bytes + sigblock + payload


def build_files(board, build_dir, firmware_dir=deploy.FIRMWARE_DIR):
    """[(slot path, bytes)] of the app for a board: deploy's build, without the boot stage main.py."""
    items = deploy.build(board, build_dir, firmware_dir=firmware_dir)
    files = [(it.remote.lstrip("/"), it.data) for it in items]
    return [(path, data) for path, data in files if path not in deploy.SOURCE_ONLY]


def build(board, version, counter, issued, expires, policy=None, key_ops=(),
          firmware_dir=deploy.FIRMWARE_DIR):
    """An unsigned bundle (bytes) of the firmware for board (a meterctl.boards.Board)."""
    with tempfile.TemporaryDirectory(prefix="umeter-bundle-") as build_dir:
        files = build_files(board, build_dir, firmware_dir)
    manifest = fmt.encode_manifest((board.name,), version, counter, issued, expires, board.arch or "py",
                                   [(path, len(data), hashlib.sha256(data).digest()) for path, data in files],
                                   policy=policy, key_ops=key_ops)
    return encode(manifest, [], b"".join(data for _, data in files))


def sign(data, keys, on_signed=None):
    """data with one more signature entry per key (signing_keys.Ed25519Key / LmsKey). on_signed(key, left)
    is called after each signature (left: LMS leaves left, None for Ed25519)."""
    b = read(data)
    message = fmt.signed_message(b.manifest_bytes)
    entries = list(b.entries)
    for i, key in enumerate(keys):
        if any(e[0] == key.alg and e[1] == key.key_id for e in entries):
            raise BundleError("sigblock: key %s has signed this bundle already" % key.key_id.hex())
        if any(k.alg == key.alg and k.key_id == key.key_id for k in keys[:i]):
            raise BundleError("sigblock: key %s given twice" % key.key_id.hex())
    if len(entries) + len(keys) > fmt.MAX_SIGNATURES:
        raise BundleError("sigblock: %d signatures, at most %d"
                          % (len(entries) + len(keys), fmt.MAX_SIGNATURES))
    for key in keys:
        sig, left = key.sign(message)
        entries.append((key.alg, key.key_id, sig))
        if on_signed:
            on_signed(key, left)
    return encode(b.manifest_bytes, entries, b.payload)


POLICY_NEEDS = {"ed25519": (fmt.ALG_ED25519,), "lms": (fmt.ALG_LMS,),
                "hybrid": (fmt.ALG_ED25519, fmt.ALG_LMS)}


def verify(data, public_keys, policy=None):
    """Check a bundle as a device would (signatures over M by the given keys, policy coverage, lengths,
    every file's SHA-256). public_keys: [(alg, public key)]. Returns the parsed Bundle; raises BundleError
    with the first reason otherwise."""
    b = read(data)
    if not b.entries:
        raise BundleError("sigblock: bundle is unsigned")
    trusted = {(alg, fmt.key_id(alg, pub)): pub for alg, pub in public_keys}
    message = fmt.signed_message(b.manifest_bytes)
    for alg, kid, sig in b.entries:
        pub = trusted.get((alg, kid))
        if pub is None:
            raise BundleError("signature by %s key %s, which is not among the given public keys"
                              % (fmt.ALG_NAMES[alg], kid.hex()))
        reason = signing_keys.verify(alg, pub, message, sig)
        if reason:
            raise BundleError("signature by %s key %s: %s" % (fmt.ALG_NAMES[alg], kid.hex(), reason))
    if policy is not None:
        have = {e[0] for e in b.entries}
        for alg in POLICY_NEEDS[policy]:
            if alg not in have:
                raise BundleError("policy %s needs an %s signature, the bundle has none"
                                  % (policy, fmt.ALG_NAMES[alg]))
    problem = payload_problem(b)
    if problem:
        raise BundleError(problem)
    return b


def _time(t):
    import time
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t))


def describe(b):
    """Lines for `meterctl bundle show`."""
    m = b.manifest
    lines = ["software id  %s" % fmt.software_id(b.manifest_bytes),
             "product      %s" % m.product,
             "boards       %s" % ", ".join(m.boards),
             "version      %s" % m.version,
             "counter      %d" % m.counter,
             "issued       %s (%d)" % (_time(m.issued), m.issued),
             "expires      %s (%d)" % (_time(m.expires), m.expires),
             "arch         %s" % m.arch]
    if m.policy is not None:
        lines.append("policy       %s (applied when the update is confirmed)" % fmt.POLICY_NAMES[m.policy])
    for op, alg, pub in m.key_ops:
        lines.append("key %-8s %s %s"
                     % (fmt.KEY_OP_NAMES[op], fmt.ALG_NAMES[alg], fmt.key_id(alg, pub).hex()))
    if not b.entries:
        lines.append("signatures   none (unsigned: meterctl bundle sign)")
    for alg, kid, sig in b.entries:
        if alg == fmt.ALG_LMS:
            q, lt, ot = fmt.lms_signature_info(sig)
            extra = "%s, leaf %d, %d bytes" % (signing_keys.lms_type_name(lt, ot), q, len(sig))
        else:
            extra = "%d bytes" % len(sig)
        lines.append("signature    %s key %s (%s)" % (fmt.ALG_NAMES[alg], kid.hex(), extra))
    lines.append("files        %d, %d bytes" % (len(m.files), m.payload_size()))
    for path, size, digest in m.files:
        lines.append("  %8d  %s  %s" % (size, digest.hex(), path))
    lines.append("payload      %s" % (payload_problem(b) or "matches the manifest"))
    return lines


def write_file(path, data):
    """Write a bundle file atomically (a half-written bundle never carries the final name)."""
    path = Path(path)
    tmp = path.with_name(".%s.tmp" % path.name)
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)
