"""Signed test bundles for the OTA tests (CPython only): fresh Ed25519 keys (cryptography) and LMS keys
(pyhsslms), tiny stand-in apps, bundles and their mutations, written as files for the MicroPython side
(tests/mpt_ota_device.py) to install and boot."""
import hashlib
import json
import os

import pyhsslms
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from umeter.ota import bundle

ISSUED = 1_760_000_000
FAR = 0xFFFFFFF0
BOARD = "sim"
ARCH = "py"


class EdKey:
    alg = bundle.ALG_ED25519

    def __init__(self):
        self._key = Ed25519PrivateKey.generate()
        self.public = self._key.public_key().public_bytes(serialization.Encoding.Raw,
                                                          serialization.PublicFormat.Raw)
        self.kid = bundle.key_id(self.alg, self.public)

    def sign(self, msg):
        return self._key.sign(msg)


class LmsKey:
    alg = bundle.ALG_LMS

    def __init__(self, height=5, w=4):
        lms_type = {5: pyhsslms.lms_sha256_m32_h5, 10: pyhsslms.lms_sha256_m32_h10}[height]
        ots_type = {4: pyhsslms.lmots_sha256_n32_w4, 8: pyhsslms.lmots_sha256_n32_w8}[w]
        self._key = pyhsslms.LmsPrivateKey(lms_type=lms_type, lmots_type=ots_type)
        self.public = self._key.publicKey().serialize()
        self.kid = bundle.key_id(self.alg, self.public)

    def sign(self, msg):
        return self._key.sign(msg)


def app_files(version="1.0", crash=False, pad=0):
    """A stand-in app: board.py and a umeter package whose app.start() says which version runs."""
    app = 'VERSION = %r\n' % version
    if crash:
        app += 'raise RuntimeError("app %s crashes at import")\n' % version
    app += 'def start(board):\n    return "app %s on " + board.NAME\n' % version
    files = {"board.py": b'NAME = "sim"\n', "umeter/__init__.py": b"",
             "umeter/app.py": app.encode(), "umeter/data/blob.bin": os.urandom(pad) if pad else b"x"}
    return files


def manifest_for(files, version="1.0", counter=1, issued=ISSUED, expires=FAR, boards=(BOARD,), arch=ARCH,
                 policy=None, key_ops=(), sizes=None):
    entries = []
    for path, data in files.items():
        size = len(data) if sizes is None or path not in sizes else sizes[path]
        entries.append((path, size, hashlib.sha256(data).digest()))
    return bundle.encode_manifest(list(boards), version, counter, issued, expires, arch, entries, policy,
                                  list(key_ops))


def sigblock_for(manifest, keys):
    msg = bundle.signed_message(manifest)
    return bundle.encode_sigblock([(k.alg, k.kid, k.sign(msg)) for k in keys])


def assemble(manifest, sigblock, payload):
    return bundle.encode_header(len(manifest), len(sigblock)) + manifest + sigblock + payload


def make(files, keys, **kw):
    """A complete bundle: manifest (kw: manifest_for's), signed by every key in `keys`."""
    manifest = manifest_for(files, **kw)
    return assemble(manifest, sigblock_for(manifest, keys), b"".join(files.values()))


def split(data):
    """(header+manifest+sigblock, payload) of a bundle."""
    m_len, s_len = bundle.parse_header(data[:bundle.HEADER_LEN])
    at = bundle.HEADER_LEN + m_len + s_len
    return data[:at], data[at:]


def parts(data):
    m_len, s_len = bundle.parse_header(data[:bundle.HEADER_LEN])
    m = data[bundle.HEADER_LEN:bundle.HEADER_LEN + m_len]
    s = data[bundle.HEADER_LEN + m_len:bundle.HEADER_LEN + m_len + s_len]
    return m, s


def write_case_dir(directory, bundles, trust):
    """bundles: {name: bytes}; trust: dict for trust.provision (keys as (alg, hex))."""
    os.makedirs(directory, exist_ok=True)
    for name, data in bundles.items():
        with open(os.path.join(directory, name + ".bnd"), "wb") as f:
            f.write(data)
    with open(os.path.join(directory, "trust.json"), "w") as f:
        json.dump(trust, f)


def trust_json(keys, policy=bundle.POLICY_ED25519, floor=bundle.POLICY_ED25519, board=BOARD, arch=ARCH):
    return {"board": board, "arch": arch, "policy": policy, "floor": floor,
            "keys": [[k.alg, k.public.hex()] for k in keys]}
