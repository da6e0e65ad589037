"""umeter.ota.bundle on CPython: round trips, the refusal rules of BUNDLE.md one by one, known answers for
the ids and the signed message, fuzzing (nothing but ValueError; an accepted mutation always changes a
parsed value, because an accepted manifest is canonical), and the fixture the MicroPython lanes parse.

Run `python tests/test_bundle_format.py --write-fixture` to regenerate tests/fixtures/ota_bundle_v1.*."""
import hashlib
import json
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from umeter.ota import bundle as b

FIXTURE = Path(__file__).parent / "fixtures" / "ota_bundle_v1"
ED_PUB = bytes(range(32))
LMS_PUB = (6).to_bytes(4, "big") + (3).to_bytes(4, "big") + bytes(range(16)) + bytes(range(32, 64))


def files(n=3):
    out = [("board.py", 10, hashlib.sha256(b"board").digest()),
           ("umeter/__init__.mpy", 0, hashlib.sha256(b"").digest())]
    for i in range(n - 2):
        out.append(("umeter/m%d.mpy" % i, 100 + i, hashlib.sha256(b"%d" % i).digest()))
    return out


def manifest(**kw):
    args = dict(boards=("esp32_devkitc", "rp2040_pico"), version="1.4.0", counter=7, issued=1_700_000_000,
                expires=1_800_000_000, arch="xtensawin", files=files(), policy=b.POLICY_HYBRID,
                key_ops=[(b.KEY_ADD, b.ALG_ED25519, ED_PUB), (b.KEY_REVOKE, b.ALG_LMS, LMS_PUB)])
    args.update(kw)
    return b.encode_manifest(**args)


def fields(m):
    return (m.product, m.boards, m.version, m.counter, m.issued, m.expires, m.arch, m.files, m.policy,
            m.key_ops)


def reencode(m):
    return b.encode_manifest(m.boards, m.version, m.counter, m.issued, m.expires, m.arch, m.files,
                             policy=m.policy, key_ops=m.key_ops, product=m.product)


def tlv(tag, value):
    return bytes((tag,)) + len(value).to_bytes(2, "big") + value


def raw_manifest(*parts, version=1):
    """A manifest from raw TLV parts (to build what the encoder refuses to)."""
    return bytes((version,)) + b"".join(parts)


def base_parts():
    f = [tlv(8, (10).to_bytes(4, "big") + bytes(32) + b"board.py"),
         tlv(8, (0).to_bytes(4, "big") + bytes(32) + b"umeter/__init__.py")]
    return [tlv(1, b"umeter"), tlv(2, b"\x01\x03sim"), tlv(3, b"1.0"), tlv(4, b"\x00\x00\x00\x01"),
            tlv(5, b"\x00\x00\x00\x10"), tlv(6, b"\x00\x00\x00\x20"), tlv(7, b"py")] + f


def test_round_trip_and_values():
    data = manifest()
    m = b.parse_manifest(data)
    assert fields(m) == ("umeter", ("esp32_devkitc", "rp2040_pico"), "1.4.0", 7, 1_700_000_000, 1_800_000_000,
                         "xtensawin", files(), b.POLICY_HYBRID,
                         [(b.KEY_ADD, b.ALG_ED25519, ED_PUB), (b.KEY_REVOKE, b.ALG_LMS, LMS_PUB)])
    assert m.payload_size() == 10 + 0 + 100
    assert reencode(m) == data
    minimal = manifest(policy=None, key_ops=())
    assert b.parse_manifest(minimal).policy is None and b.parse_manifest(minimal).key_ops == []
    assert b.parse_manifest(raw_manifest(*base_parts())).arch == "py"


def test_header_round_trip_and_refusals():
    h = b.encode_header(300, 77)
    assert len(h) == b.HEADER_LEN and h[:8] == b"UMTRBNDL" and h[8] == 1 and h[9] == 0
    assert b.parse_header(h) == (300, 77)
    assert b.parse_header(h + b"more") == (300, 77)
    cases = [(h[:13], "14"), (b"X" + h[1:], "magic"), (h[:8] + b"\x02" + h[9:], "version 0x02"),
             (h[:9] + b"\x01" + h[10:], "reserved"), (h[:10] + b"\x00\x00" + h[12:], "manifest_len 0"),
             (h[:10] + (8193).to_bytes(2, "big") + h[12:], "manifest_len 8193"),
             (h[:12] + b"\x00\x00", "sigblock_len 0"), (h[:12] + (16385).to_bytes(2, "big"), "sigblock_len")]
    for data, why in cases:
        with pytest.raises(b.BundleError, match=why):
            b.parse_header(data)
    for args in ((0, 1), (8193, 1), (1, 0), (1, 16385)):
        with pytest.raises(ValueError):
            b.encode_header(*args)


def test_known_answers_for_ids_and_message():
    data = manifest()
    digest = hashlib.sha256(data).digest()
    assert b.signed_message(data) == b"umeter bundle v1\x00" + digest and len(b.signed_message(data)) == 49
    assert b.software_id(data) == digest.hex() and len(b.software_id(data)) == 64
    assert b.key_id(b.ALG_ED25519, ED_PUB) == hashlib.sha256(b"umeter ota key v1\x01" + ED_PUB).digest()[:8]
    assert b.key_id(b.ALG_LMS, LMS_PUB) == hashlib.sha256(b"umeter ota key v1\x02" + LMS_PUB).digest()[:8]
    with pytest.raises(b.BundleError, match="32"):
        b.key_id(b.ALG_ED25519, ED_PUB[:31])
    with pytest.raises(b.BundleError, match="LMS type"):
        b.key_id(b.ALG_LMS, b"\x00\x00\x00\x0f" + LMS_PUB[4:])
    with pytest.raises(b.BundleError, match="unknown algorithm"):
        b.key_id(3, ED_PUB)


REFUSALS = [
    (raw_manifest(*base_parts(), version=2), "unknown manifest version 0x02"),
    (raw_manifest(*base_parts(), tlv(0x0B, b"")), "unknown tag 0x0b"),
    (raw_manifest(tlv(0, b""), *base_parts()), "unknown tag 0x00"),
    (raw_manifest(*base_parts()[1:]), "missing PRODUCT"),
    (raw_manifest(*[p for p in base_parts() if p[0] != 6]), "missing EXPIRES"),
    (raw_manifest(*base_parts()[:7]), "no FILE"),
    (raw_manifest(*(base_parts()[:2] + base_parts()[1:])), "duplicate BOARDS"),
    (raw_manifest(base_parts()[1], base_parts()[0], *base_parts()[2:]), "PRODUCT out of order"),
    (raw_manifest(*base_parts(), tlv(9, b"\x01"), tlv(8, bytes(36) + b"x.py")), "FILE out of order"),
    (raw_manifest(*base_parts())[:-3], "FILE field of 54 bytes runs past the end"),
    (raw_manifest(*base_parts()) + b"\x08\x00", "truncated field header"),
    (raw_manifest(*base_parts()) + tlv(8, b""), "FILE field of 0 bytes"),
    (raw_manifest(tlv(1, b"umeter!"), *base_parts()[1:]), "PRODUCT has a byte 0x21"),
    (raw_manifest(tlv(1, b""), *base_parts()[1:]), "PRODUCT is 0 bytes"),
    (raw_manifest(tlv(1, b"u" * 33), *base_parts()[1:]), "PRODUCT is 33 bytes"),
    (raw_manifest(base_parts()[0], tlv(2, b"\x00"), *base_parts()[2:]), "BOARDS count 0"),
    (raw_manifest(base_parts()[0], tlv(2, b"\x11" + b"\x01a" * 17), *base_parts()[2:]), "BOARDS count 17"),
    (raw_manifest(base_parts()[0], tlv(2, b"\x02\x03sim\x03sim"), *base_parts()[2:]), "listed twice"),
    (raw_manifest(base_parts()[0], tlv(2, b"\x01\x03sim\x00"), *base_parts()[2:]), "after its 1 names"),
    (raw_manifest(base_parts()[0], tlv(2, b"\x01\x05sim"), *base_parts()[2:]), "runs past the field"),
    (raw_manifest(base_parts()[0], tlv(2, b"\x02\x03sim"), *base_parts()[2:]), "BOARDS truncated"),
    (raw_manifest(base_parts()[0], tlv(2, b"\x01\x00"), *base_parts()[2:]), "board name is 0 bytes"),
    (raw_manifest(*base_parts()[:2], tlv(3, b"1 0"), *base_parts()[3:]), "VERSION has a byte 0x20"),
    (raw_manifest(*base_parts()[:3], tlv(4, b"\x00\x01"), *base_parts()[4:]), "COUNTER is 2 bytes"),
    (raw_manifest(*base_parts()[:5], tlv(6, b"\x00\x00\x00\x10"), *base_parts()[6:]), "EXPIRES 16 not after"),
    (raw_manifest(*base_parts()[:6], tlv(7, b"arm64"), *base_parts()[7:]), "unknown ARCH 'arm64'"),
    (raw_manifest(*base_parts(), tlv(9, b"\x04")), "unknown POLICY 0x04"),
    (raw_manifest(*base_parts(), tlv(9, b"\x01\x01")), "POLICY is 2 bytes"),
    (raw_manifest(*base_parts(), tlv(10, b"\x03\x01" + ED_PUB)), "unknown KEY op 0x03"),
    (raw_manifest(*base_parts(), tlv(10, b"\x01\x03" + ED_PUB)), "unknown algorithm 0x03"),
    (raw_manifest(*base_parts(), tlv(10, b"\x01\x01" + ED_PUB[:31])), "31 bytes, must be 32"),
    (raw_manifest(*base_parts(), tlv(10, b"\x01\x02" + b"\x00\x00\x00\x0b" + LMS_PUB[4:])),
     "LMS type 0x0000000b"),
    (raw_manifest(*base_parts(), tlv(10, b"\x01\x02" + LMS_PUB[:4] + b"\x00\x00\x00\x05" + LMS_PUB[8:])),
     "LM-OTS type 0x00000005"),
    (raw_manifest(*base_parts(), *[tlv(10, b"\x01\x01" + ED_PUB)] * 9), "more than 8 KEY"),
]


def file_manifest(path_list, size=1):
    return raw_manifest(*base_parts()[:7], *[tlv(8, size.to_bytes(4, "big") + bytes(32) + p.encode())
                                            for p in path_list])


PATH_REFUSALS = [
    ("../x", "starts with '.'"), ("/etc/passwd", "starts with '/'"), (".hidden", "starts with '.'"),
    ("umeter//a.py", "empty"), ("umeter/../x", ".."), ("umeter/./x", "."), ("umeter/", "empty"),
    ("a b.py", "0x20"), ("umeter\\a.py", "0x5c"), ("x" * 65, "65 bytes"), ("main.py", "boot stage"),
    ("main.mpy", "boot stage"), ("caf\u00e9.py", "0xc3"),
]


def test_every_refusal_rule_of_the_manifest():
    for data, why in REFUSALS:
        with pytest.raises(b.BundleError, match="^manifest: ") as e:
            b.parse_manifest(data)
        assert why in str(e.value), (why, str(e.value))
    with pytest.raises(b.BundleError, match="0 bytes"):
        b.parse_manifest(b"")
    with pytest.raises(b.BundleError, match="8193 bytes"):
        b.parse_manifest(b"\x01" * 8193)


def test_every_required_field_is_required():
    names = {1: "PRODUCT", 2: "BOARDS", 3: "VERSION", 4: "COUNTER", 5: "ISSUED", 6: "EXPIRES", 7: "ARCH"}
    for tag, name in names.items():
        with pytest.raises(b.BundleError, match="missing %s" % name):
            b.parse_manifest(raw_manifest(*[p for p in base_parts() if p[0] != tag]))


def test_file_rules():
    ok = ["board.py", "umeter/__init__.py"]
    for path, why in PATH_REFUSALS:
        with pytest.raises(b.BundleError, match="^manifest: FILE path") as e:
            b.parse_manifest(file_manifest(ok + [path]))
        assert why in str(e.value), (path, str(e.value))
        with pytest.raises(ValueError):
            b.check_path(path)
    cases = [(ok + ["umeter/__init__.py"], "appears twice"), (ok + ["umeter/__init__.mpy"], "shadow"),
             (ok + ["umeter"], "also a directory"), (ok + ["board.py/x.py"], "also a directory"),
             (["umeter/__init__.py"], "no board.py"), (["board.mpy", "hal/x.py"], "umeter/ package"),
             (["board.py", "umeter"], "umeter/ package"), (ok + ["f%d.py" % i for i in range(95)], "96 FILE")]
    for paths, why in cases:
        with pytest.raises(b.BundleError, match=why):
            b.parse_manifest(file_manifest(paths))
    assert len(b.parse_manifest(file_manifest(ok + ["f%d.py" % i for i in range(94)])).files) == 96
    with pytest.raises(b.BundleError, match="over 1048576"):
        b.parse_manifest(file_manifest(ok, size=(1 << 20) + 1))
    assert b.parse_manifest(file_manifest(ok, size=1 << 20)).payload_size() == 2 << 20
    with pytest.raises(b.BundleError, match="need size, sha256 and a path"):
        b.parse_manifest(raw_manifest(*base_parts()[:7], tlv(8, bytes(36))))


def test_encoder_refuses_what_the_parser_refuses():
    bad = [dict(counter=1 << 32), dict(counter=-1), dict(issued=2, expires=1), dict(arch="arm64"),
           dict(policy=4), dict(policy=256), dict(boards=()), dict(boards=("a" * 33,)), dict(version=""),
           dict(files=files() + [("../x", 1, bytes(32))]), dict(files=[("board.py", 1, bytes(31))]),
           dict(files=files() + [("umeter/f%d/%s.py" % (i, "x" * 50), 1, bytes(32)) for i in range(93)]),
           dict(key_ops=[(3, 1, ED_PUB)])]
    for kw in bad:
        with pytest.raises(ValueError):
            manifest(**kw)


def lms_sig(q=3, lms_type=6, ots_type=3):
    p = b.LMOTS_P.get(ots_type, 34)   # unknown types: shaped like W8 / H10, for the refusal cases
    h = b.LMS_HEIGHTS.get(lms_type, 10)
    return (q.to_bytes(4, "big") + ots_type.to_bytes(4, "big") + bytes(32 * (p + 1))
            + lms_type.to_bytes(4, "big") + bytes(32 * h))


def test_sigblock_round_trip_and_refusals():
    entries = [(b.ALG_ED25519, b"edkey-01", bytes(range(64))), (b.ALG_LMS, b"lmskey01", lms_sig())]
    data = b.encode_sigblock(entries)
    assert b.parse_sigblock(data) == entries
    assert len(lms_sig()) == 2508 and len(lms_sig(0, 6, 4)) == 1452 and len(lms_sig(0, 9, 1)) == 9324
    assert b.lms_signature_info(lms_sig(5, 7, 4)) == (5, 7, 4)
    assert b.parse_sigblock(b"\x00", allow_empty=True) == []
    one = b.encode_sigblock(entries[:1])
    cases = [(b"", "0 bytes"), (b"\x00", "unsigned"), (b"\x05", "5 signatures"), (one[:-1], "runs past"),
             (one + b"\x00", "1 bytes after"), (one[:1] + b"\x03" + one[2:], "unknown algorithm 0x03"),
             (one[:9], "truncated"), (b"\x01\x01edkey-01\x00\x3f" + bytes(63), "must be 64"),
             (b"\x02" + one[1:] + one[1:], "signs twice"),
             (b"\x01\x02lmskey01\x00\x07" + bytes(7), "LMS signature of 7 bytes")]
    for sig, why in [(lms_sig(1 << 10), "leaf index 1024"), (lms_sig()[:-1], "its types need 2508"),
                     (lms_sig() + b"\x00", "its types need 2508"),
                     (lms_sig(ots_type=5), "LM-OTS type 0x00000005"),
                     (lms_sig(lms_type=10)[:2508], "LMS type 0x0000000a"), (lms_sig()[:100], "too short")]:
        cases.append((b"\x01\x02lmskey01" + len(sig).to_bytes(2, "big") + sig, why))
    for data, why in cases:
        with pytest.raises(b.BundleError, match="^sigblock: ") as e:
            b.parse_sigblock(data)
        assert why in str(e.value), (why, str(e.value))
    with pytest.raises(ValueError):
        b.encode_sigblock(entries * 3)
    with pytest.raises(ValueError):
        b.encode_sigblock([(b.ALG_ED25519, b"short", bytes(64))])


MUTATE = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@MUTATE
@given(st.binary(max_size=400))
def test_fuzz_random_bytes_only_value_errors(data):
    for parse in (b.parse_manifest, b.parse_sigblock, b.parse_header):
        try:
            parse(data)
        except ValueError:
            pass
    try:
        b.parse_manifest(b"\x01" + data)
    except ValueError:
        pass


@MUTATE
@given(st.data())
def test_fuzz_mutated_manifest_refused_or_visibly_different(draw):
    data = bytearray(manifest())
    for _ in range(draw.draw(st.integers(1, 3))):
        kind = draw.draw(st.sampled_from(("set", "insert", "delete")))
        at = draw.draw(st.integers(0, len(data) - 1))
        if kind == "set":
            data[at] = draw.draw(st.integers(0, 255))
        elif kind == "insert":
            data.insert(at, draw.draw(st.integers(0, 255)))
        else:
            del data[at]
    check_mutation(bytes(data))


def check_mutation(data):
    original = b.parse_manifest(manifest())
    try:
        m = b.parse_manifest(data)
    except ValueError:
        return
    # Accepted: the manifest must be canonical (the encoder gives back the very bytes), so any change of
    # bytes is a change of some parsed value, never a silent one.
    assert reencode(m) == data
    if data != manifest():
        assert fields(m) != fields(original)


def test_every_single_byte_change_of_a_manifest():
    data = manifest()
    accepted = 0
    for i in range(len(data)):
        for flip in (0x01, 0x80, 0xFF):
            bad = bytearray(data)
            bad[i] ^= flip
            try:
                m = b.parse_manifest(bytes(bad))
            except ValueError:
                continue
            accepted += 1
            assert fields(m) != fields(b.parse_manifest(data)) and reencode(m) == bytes(bad)
    assert accepted > 0   # e.g. counter or hash bytes: accepted as another, signed-over, value


@MUTATE
@given(st.data())
def test_fuzz_mutated_sigblock(draw):
    entries = [(b.ALG_ED25519, b"edkey-01", bytes(range(64))), (b.ALG_LMS, b"lmskey01", lms_sig(0, 5, 4))]
    data = bytearray(b.encode_sigblock(entries))
    at = draw.draw(st.integers(0, len(data) - 1))
    data[at] = draw.draw(st.integers(0, 255))
    try:
        got = b.parse_sigblock(bytes(data))
    except ValueError:
        return
    assert b.encode_sigblock(got) == bytes(data)


# -- the fixture the MicroPython lanes parse ---------------------------------------------------------

def fixture_expectation(data):
    manifest_len, sigblock_len = b.parse_header(data[:14])
    mbytes = data[14:14 + manifest_len]
    m = b.parse_manifest(mbytes)
    sigs = b.parse_sigblock(data[14 + manifest_len:14 + manifest_len + sigblock_len])
    return {"manifest_len": manifest_len, "sigblock_len": sigblock_len, "software_id": b.software_id(mbytes),
            "product": m.product, "boards": list(m.boards), "version": m.version, "counter": m.counter,
            "issued": m.issued, "expires": m.expires, "arch": m.arch, "policy": m.policy,
            "files": [[p, s, d.hex()] for p, s, d in m.files],
            "key_ops": [[op, alg, pub.hex()] for op, alg, pub in m.key_ops],
            "signatures": [[alg, kid.hex(), len(sig)] for alg, kid, sig in sigs]}


def write_fixture():
    """A signed bundle (a fresh Ed25519 + LMS H5/W8 key pair, both also KEY-added in the manifest)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
    import pyhsslms

    ed = Ed25519PrivateKey.generate()
    ed_pub = ed.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    lms = pyhsslms.LmsPrivateKey(pyhsslms.lms_sha256_m32_h5, pyhsslms.lmots_sha256_n32_w8)
    lms_pub = lms.publicKey().serialize()
    payload = [("board.py", b"NAME = 'sim'\n"), ("umeter/__init__.py", b""),
               ("umeter/app.py", b"def main():\n    return 42\n" * 20)]
    mbytes = b.encode_manifest(("sim", "esp32_devkitc"), "0.9.1-rc1+fixture", 12, 1_767_225_600,
                               1_798_761_600, "py",
                               [(p, len(d), hashlib.sha256(d).digest()) for p, d in payload],
                               policy=b.POLICY_HYBRID,
                               key_ops=[(b.KEY_ADD, b.ALG_ED25519, ed_pub), (b.KEY_ADD, b.ALG_LMS, lms_pub)])
    msg = b.signed_message(mbytes)
    sigblock = b.encode_sigblock([(b.ALG_ED25519, b.key_id(b.ALG_ED25519, ed_pub), ed.sign(msg)),
                                  (b.ALG_LMS, b.key_id(b.ALG_LMS, lms_pub), lms.sign(msg))])
    data = b.encode_header(len(mbytes), len(sigblock)) + mbytes + sigblock + b"".join(d for _, d in payload)
    FIXTURE.with_suffix(".bin").write_bytes(data)
    FIXTURE.with_suffix(".json").write_text(json.dumps(fixture_expectation(data), indent=1) + "\n")


def test_fixture_is_what_cpython_parses_and_its_signatures_verify():
    from meterctl import signing_keys

    data = FIXTURE.with_suffix(".bin").read_bytes()
    assert fixture_expectation(data) == json.loads(FIXTURE.with_suffix(".json").read_text())
    manifest_len, sigblock_len = b.parse_header(data[:14])
    mbytes = data[14:14 + manifest_len]
    keys = {b.key_id(alg, pub): (alg, pub) for _, alg, pub in b.parse_manifest(mbytes).key_ops}
    for alg, kid, sig in b.parse_sigblock(data[14 + manifest_len:14 + manifest_len + sigblock_len]):
        assert signing_keys.verify(*keys[kid], b.signed_message(mbytes), sig) is None


if __name__ == "__main__" and "--write-fixture" in sys.argv:
    write_fixture()
