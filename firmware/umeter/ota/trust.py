# Anti-downgrade and trust state of signed updates (SLOTS.md section 3), kept in MCU-internal storage
# through a keystore blob backend (hal/keystore.py: load(name) / save(name, data) atomic / erase(name)):
# the device's board and arch, the installed security counter, the highest ISSUED time installed (the
# clock floor), the policy and its floor, and the trusted public keys. Never on the SPI flash.
# A damaged entry raises TrustError (reported by the caller); it is never reset to something weaker.
import hashlib

from umeter.ota import bundle

BLOB = "otatrust"       # backend entry name (NVS keys are at most 15 characters)
VERSION = 1
MAX_KEYS = 6            # trusted keys; with MAX_REVOKED ids the entry stays under 490 bytes, within the
MAX_REVOKED = 8         # ESP32 backend's 512-byte buffer (the oldest revoked id is dropped beyond that)
_CHECK = 4
_FIXED = 15             # version, counter, issued, policy, floor, board len, arch len, keys, revoked


class TrustError(Exception):
    """The trust entry is damaged, unknown, missing where it must exist, or a change would weaken it."""


class Trust:
    """Plain values: keys = [(alg, public key)] trusted, in the order added; revoked = [(alg, key id)]."""

    def __init__(self, board, arch, counter, issued, policy, floor, keys, revoked=()):
        self.board = board
        self.arch = arch
        self.counter = counter
        self.issued = issued
        self.policy = policy
        self.floor = floor
        self.keys = list(keys)
        self.revoked = list(revoked)

    def find(self, alg, kid):
        """The trusted public key with this alg and key id, or None (unknown or revoked)."""
        kid = bytes(kid)
        for a, pub in self.keys:
            if a == alg and bundle.key_id(a, pub) == kid:
                return pub
        return None

    def is_revoked(self, alg, kid):
        return (alg, bytes(kid)) in self.revoked

    def usable(self, alg):
        for a, _ in self.keys:
            if a == alg:
                return True
        return False

    def summary(self):
        """What status and `meterctl id` show (public values only)."""
        return {"board": self.board, "arch": self.arch, "security_counter": self.counter,
                "clock_floor": self.issued, "policy": bundle.POLICY_NAMES.get(self.policy, "?"),
                "policy_floor": bundle.POLICY_NAMES.get(self.floor, "?"),
                "keys": ["%s %s" % (bundle.ALG_NAMES[a], bundle._hex(bundle.key_id(a, p)))
                         for a, p in self.keys],
                "revoked": ["%s %s" % (bundle.ALG_NAMES[a], bundle._hex(k)) for a, k in self.revoked]}


def needed_algs(policy):
    if policy == bundle.POLICY_HYBRID:
        return (bundle.ALG_ED25519, bundle.ALG_LMS)
    if policy == bundle.POLICY_LMS:
        return (bundle.ALG_LMS,)
    return (bundle.ALG_ED25519,)


def check(trust):
    """Raise TrustError unless the state is consistent: policy >= floor, every needed alg has a key."""
    if trust.policy not in bundle.POLICY_NAMES or trust.floor not in bundle.POLICY_NAMES:
        raise TrustError("unknown policy code")
    if trust.policy < trust.floor:
        raise TrustError("policy %s below the floor %s" % (bundle.POLICY_NAMES[trust.policy],
                                                            bundle.POLICY_NAMES[trust.floor]))
    for alg in needed_algs(trust.policy):
        if not trust.usable(alg):
            raise TrustError("policy %s needs a trusted %s key" % (bundle.POLICY_NAMES[trust.policy],
                                                                  bundle.ALG_NAMES[alg]))
    if len(trust.keys) > MAX_KEYS or len(trust.revoked) > MAX_REVOKED:
        raise TrustError("more than %d trusted keys or %d revoked ids" % (MAX_KEYS, MAX_REVOKED))
    for alg, pub in trust.keys:
        if trust.is_revoked(alg, bundle.key_id(alg, pub)):
            raise TrustError("a revoked key is listed as trusted")


def applied(trust, manifest):
    """The trust state after confirming an app with this manifest (a new Trust; idempotent, so a cut
    between the boot-state and the trust write can simply apply it again). Raises TrustError when the
    result would be weaker than the floor or leave a needed alg without a key."""
    keys = list(trust.keys)
    revoked = list(trust.revoked)
    for op, alg, pub in manifest.key_ops:
        pub = bytes(pub)
        kid = bundle.key_id(alg, pub)
        if op == bundle.KEY_ADD:
            if (alg, kid) in revoked:
                raise TrustError("KEY add of a revoked %s key (revocation is final)" % bundle.ALG_NAMES[alg])
            if (alg, pub) not in keys:
                if len(keys) >= MAX_KEYS:
                    raise TrustError("KEY add: %d keys already trusted" % MAX_KEYS)
                keys.append((alg, pub))
        else:
            if (alg, pub) in keys:
                keys.remove((alg, pub))
            if (alg, kid) not in revoked:
                revoked.append((alg, kid))
                if len(revoked) > MAX_REVOKED:
                    revoked.pop(0)
    policy = trust.policy if manifest.policy is None else manifest.policy
    new = Trust(trust.board, trust.arch, max(trust.counter, manifest.counter),
                max(trust.issued, manifest.issued), policy, trust.floor, keys, revoked)
    check(new)
    return new


def encode(trust):
    board = trust.board.encode()
    arch = trust.arch.encode()
    if not (1 <= len(board) <= 32 and 1 <= len(arch) <= 16):
        raise TrustError("board or arch name length out of range")
    if not (0 <= trust.counter <= 0xFFFFFFFF and 0 <= trust.issued <= 0xFFFFFFFF):
        raise TrustError("counter or clock floor out of range")
    check(trust)
    out = bytearray((VERSION,))
    out += trust.counter.to_bytes(4, "big") + trust.issued.to_bytes(4, "big")
    out += bytes((trust.policy, trust.floor, len(board), len(arch), len(trust.keys), len(trust.revoked)))
    out += board + arch
    for alg, pub in trust.keys:
        if len(pub) != bundle.PUBLIC_KEY_LEN[alg]:
            raise TrustError("public key of the wrong size")
        out += bytes((alg,)) + pub
    for alg, kid in trust.revoked:
        out += bytes((alg,)) + kid
    return bytes(out) + hashlib.sha256(out).digest()[:_CHECK]


def decode(blob):
    if len(blob) < _FIXED + _CHECK or \
            hashlib.sha256(blob[:-_CHECK]).digest()[:_CHECK] != bytes(blob[-_CHECK:]):
        raise TrustError("trust store entry %r is damaged" % BLOB)
    data = memoryview(blob)[:-_CHECK]
    if data[0] != VERSION:
        raise TrustError("trust store entry %r has unknown version %d" % (BLOB, data[0]))
    counter = bundle._u(data, 1, 4)
    issued = bundle._u(data, 5, 4)
    policy, floor, nboard, narch, nkeys, nrev = data[9], data[10], data[11], data[12], data[13], data[14]
    at = _FIXED
    try:
        board = bytes(data[at:at + nboard]).decode()
        arch = bytes(data[at + nboard:at + nboard + narch]).decode()
        at += nboard + narch
        keys = []
        for _ in range(nkeys):
            alg = data[at]
            n = bundle.PUBLIC_KEY_LEN[alg]
            if at + 1 + n > len(data):
                raise ValueError
            keys.append((alg, bytes(data[at + 1:at + 1 + n])))
            at += 1 + n
        revoked = []
        for _ in range(nrev):
            if data[at] not in bundle.ALG_NAMES or at + 9 > len(data):
                raise ValueError
            revoked.append((data[at], bytes(data[at + 1:at + 9])))
            at += 9
    except (IndexError, KeyError, ValueError, UnicodeError):
        raise TrustError("trust store entry %r has a bad layout" % BLOB)
    if at != len(data) or nboard == 0 or narch == 0:
        raise TrustError("trust store entry %r has a bad layout" % BLOB)
    trust = Trust(board, arch, counter, issued, policy, floor, keys, revoked)
    check(trust)
    return trust


def load(backend):
    """The device's Trust, or None when it was never provisioned; TrustError when damaged."""
    blob = backend.load(BLOB)
    return None if blob is None else decode(bytes(blob))


def save(backend, trust, old=None):
    """Store `trust`. With `old`: refuse anything weaker (counter, clock floor, floor, policy floor)."""
    if old is not None:
        if trust.counter < old.counter or trust.issued < old.issued or trust.floor < old.floor:
            raise TrustError("refused: the new trust state is weaker than the stored one")
        if trust.policy < old.floor:
            raise TrustError("refused: policy below the floor")
    backend.save(BLOB, encode(trust))


def provision(backend, board, arch, keys, policy, floor, counter=0):
    """First trust state (meterctl provision, or the factory's ota_keys module next to the boot stage).
    Refuses a device that already has one: later changes come only from signed, confirmed updates."""
    if backend.load(BLOB) is not None:
        raise TrustError("the update trust store is already provisioned")
    trust = Trust(board, arch, counter, 0, policy, floor, [(a, bytes(p)) for a, p in keys])
    for alg, pub in trust.keys:
        bundle.key_id(alg, pub)  # refuses unknown algs and bad key sizes
    save(backend, trust)
    return trust
