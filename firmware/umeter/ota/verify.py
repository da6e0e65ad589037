# Is this manifest + signature block acceptable on this device? (BUNDLE.md section 4, SLOTS.md section 4)
# accept() is the install-time check under the device policy; installed() is the boot stage's check of a
# slot that an earlier accept() let in. Both raise Refused with the reason; nothing here writes anything.
from umeter.ota import bundle
from umeter.ota import trust as trustmod


class Refused(Exception):
    """The bundle or slot is not acceptable; str() says why, in words an operator can act on."""


def _check_signature(alg, pub, msg, sig):
    if alg == bundle.ALG_ED25519:
        from umeter.crypto import ed25519
        return ed25519.verify(pub, msg, sig)
    from umeter.crypto import lms
    return lms.verify(pub, msg, sig)


def _entry_name(alg, kid):
    return "%s key %s" % (bundle.ALG_NAMES[alg], bundle._hex(kid))


def parse(manifest_bytes, sigblock_bytes):
    """(Manifest, entries), BundleError turned into Refused."""
    try:
        return bundle.parse_manifest(manifest_bytes), bundle.parse_sigblock(sigblock_bytes)
    except bundle.BundleError as e:
        raise Refused(str(e))


def _signatures(trust, manifest_bytes, entries, revoked_ok):
    """Every entry must name a key the device trusts (with revoked_ok: or revoked by the manifest's own
    KEY op) and verify over M. Returns the set of algs that signed."""
    msg = bundle.signed_message(manifest_bytes)
    algs = []
    for alg, kid, sig in entries:
        pub = trust.find(alg, kid)
        if pub is None and revoked_ok is not None:
            pub = revoked_ok(alg, kid)
        if pub is None:
            why = "revoked" if trust.is_revoked(alg, kid) else "unknown"
            raise Refused("signature by %s %s: %s" % (why, _entry_name(alg, kid), "not trusted"))
        if not _check_signature(alg, pub, msg, sig):
            raise Refused("signature by %s does not verify" % _entry_name(alg, kid))
        if alg not in algs:
            algs.append(alg)
    return algs


def _fits_device(trust, m):
    if m.product != "umeter":
        raise Refused("product %r is not umeter" % m.product)
    if trust.board not in m.boards:
        raise Refused("bundle is for board(s) %s, this is %s" % (", ".join(m.boards), trust.board))
    if m.arch != trust.arch:
        raise Refused("bundle is built for arch %s, this device runs %s" % (m.arch, trust.arch))
    if m.counter < trust.counter:
        raise Refused("security counter %d below the installed %d (downgrade)" % (m.counter, trust.counter))


def accept(trust, manifest_bytes, sigblock_bytes, clock=0):
    """The parsed Manifest if a bundle with this head may be installed now; Refused otherwise.
    clock: the device's idea of Unix time (0 when it has none); the clock floor covers a reset clock."""
    m, entries = parse(manifest_bytes, sigblock_bytes)
    algs = _signatures(trust, manifest_bytes, entries, None)
    for alg in trustmod.needed_algs(trust.policy):
        if alg not in algs:
            raise Refused("policy %s needs a valid %s signature; the bundle has none"
                          % (bundle.POLICY_NAMES[trust.policy], bundle.ALG_NAMES[alg]))
    _fits_device(trust, m)
    now = clock if clock > trust.issued else trust.issued
    if m.expires <= now:
        raise Refused("bundle expired (expires %d, device time %d)" % (m.expires, now))
    if m.policy is not None and m.policy < trust.floor:
        raise Refused("policy %s below the device's floor %s" % (bundle.POLICY_NAMES[m.policy],
                                                                 bundle.POLICY_NAMES[trust.floor]))
    try:
        trustmod.applied(trust, m)
    except trustmod.TrustError as e:
        raise Refused("trust change refused: %s" % e)
    return m


def installed(trust, manifest_bytes, sigblock_bytes):
    """The boot stage's check of an installed slot's manifest (its files are hashed by the caller).
    Signatures must verify under keys the device trusts, or under a key this very manifest revokes (an
    update that rotates keys was signed by the key it retires; once confirmed, that key is revoked). The
    policy is not re-applied (a confirmed policy upgrade would otherwise refuse the app that made it):
    the slot got in through accept(), and its manifest digest is pinned in the boot state."""
    m, entries = parse(manifest_bytes, sigblock_bytes)

    def revoked_here(alg, kid):
        for op, a, pub in m.key_ops:
            if op == bundle.KEY_REVOKE and a == alg and bundle.key_id(a, pub) == bytes(kid):
                return pub
        return None

    _signatures(trust, manifest_bytes, entries, revoked_here)
    _fits_device(trust, m)
    return m
