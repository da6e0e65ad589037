# Authentication and session MACs of the console (FRAMING.md sections 4 and 5): HMAC-SHA256
# challenge-response over a fresh device nonce, session keys derived from both nonces and the role key
# (HKDF-SHA256), a truncated HMAC on every later frame, and an HMAC keystream for payloads that carry
# secrets. Used by the device (console.py) and by the host client (meterctl.console_client). Own HMAC:
# MicroPython has no hmac module, and umeter.crypto.seal imports cryptolib, which CPython lacks.
import hashlib
import struct

from micropython import const

NONCE_LEN = const(32)
SID_LEN = const(8)
KEY_LEN = const(32)
PROOF_LEN = const(32)
TAG_LEN = const(16)
DIR_TO_DEVICE = const(0)
DIR_TO_HOST = const(1)

LABEL_CLIENT = b"umeter auth v1"
LABEL_DEVICE = b"umeter auth v1 device"
LABEL_SESSION = b"umeter session v1"


class Hmac:
    """HMAC-SHA256 (RFC 2104) with the padded keys computed once."""

    def __init__(self, key):
        if len(key) > 64:
            key = hashlib.sha256(key).digest()
        ipad = bytearray(64)
        opad = bytearray(64)
        for i in range(64):
            b = key[i] if i < len(key) else 0
            ipad[i] = b ^ 0x36
            opad[i] = b ^ 0x5C
        self._ipad = bytes(ipad)
        self._opad = bytes(opad)

    def mac(self, *parts):
        inner = hashlib.sha256(self._ipad)
        for p in parts:
            inner.update(p)
        outer = hashlib.sha256(self._opad)
        outer.update(inner.digest())
        return outer.digest()

    def __repr__(self):
        return "<Hmac>"


def equal(a, b):
    """Constant-time comparison of two byte strings (length is not secret)."""
    if len(a) != len(b):
        return False
    acc = 0
    for i in range(len(a)):
        acc |= a[i] ^ b[i]
    return acc == 0


def client_proof(role_key, role, device_nonce, client_nonce):
    """HMAC(role key, "umeter auth v1" || role || device nonce || client nonce): the host's answer."""
    return Hmac(role_key).mac(LABEL_CLIENT, bytes((role,)), device_nonce, client_nonce)


def device_proof(role_key, role, device_nonce, client_nonce):
    """The device's answer in return (the host knows it talks to a meter holding the role key)."""
    return Hmac(role_key).mac(LABEL_DEVICE, bytes((role,)), device_nonce, client_nonce)


def _seq3(seq):
    return bytes((seq >> 16, (seq >> 8) & 0xFF, seq & 0xFF))


class SessionKeys:
    """The keys of one session. HKDF-SHA256: PRK = HMAC(device nonce || client nonce, role key);
    mac key = HMAC(PRK, "umeter session v1 mac" || role || sid || 0x01), enc key likewise with " enc"."""

    def __init__(self, role_key, role, sid, device_nonce, client_nonce):
        if len(role_key) != KEY_LEN or len(sid) != SID_LEN:
            raise ValueError("session key input sizes")
        prk = Hmac(bytes(device_nonce) + bytes(client_nonce)).mac(role_key)
        expand = Hmac(prk)
        ctx = bytes((role,)) + bytes(sid) + b"\x01"
        self._mac = Hmac(expand.mac(LABEL_SESSION, b" mac", ctx))
        self._enc = Hmac(expand.mac(LABEL_SESSION, b" enc", ctx))
        self.sid = bytes(sid)
        self.role = role

    def __repr__(self):
        return "<SessionKeys role=%d>" % self.role

    def tag(self, direction, flags, command, seq, payload):
        """Truncated session MAC over (sid, direction, flags, command, seq, payload)."""
        head = struct.pack(">BBB", direction, flags, command) + _seq3(seq)
        return self._mac.mac(self.sid, head, payload)[:TAG_LEN]

    def crypt(self, direction, seq, data):
        """XOR `data` with HMAC(enc key, sid || direction || seq || block u16) blocks; its own inverse.
        (direction, seq) never repeats within a session, so no keystream is used twice."""
        out = bytearray(data)
        head = bytes((direction,)) + _seq3(seq)
        block = 0
        for start in range(0, len(out), 32):
            ks = self._enc.mac(self.sid, head, bytes((block >> 8, block & 0xFF)))
            for i in range(start, min(start + 32, len(out))):
                out[i] ^= ks[i - start]
            block += 1
        return bytes(out)
