# umeter.ota.bundle on the MicroPython lanes: the fixture bundle CPython built and signed parses to the
# same values (tests/fixtures/ota_bundle_v1.json, written by CPython), round trips, refusals, u32 edge values
# (heap ints on the 32-bit lane), and the memory one parse takes.
import gc
import hashlib
import json
import sys
from binascii import hexlify

from mptest import raises
from umeter.ota import bundle as b

FIXTURE = __file__.rsplit("/", 1)[0] + "/fixtures/ota_bundle_v1"


def read_fixture():
    with open(FIXTURE + ".bin", "rb") as f:
        data = f.read()
    with open(FIXTURE + ".json") as f:
        want = json.load(f)
    return data, want


def hx(x):
    return hexlify(x).decode()


def files(n):
    out = [("board.py", 10, hashlib.sha256(b"board").digest())]
    for i in range(n - 1):
        out.append(("umeter/m%02d.mpy" % i, 100 + i, hashlib.sha256(b"%d" % i).digest()))
    return out


def manifest(n=3, **kw):
    args = dict(boards=("sim",), version="1.0", counter=0xFFFFFFFF, issued=(1 << 32) - 2,
                expires=(1 << 32) - 1, arch="py", files=files(n), policy=b.POLICY_LMS,
                key_ops=[(b.KEY_ADD, b.ALG_ED25519, bytes(32))])
    args.update(kw)
    return b.encode_manifest(args["boards"], args["version"], args["counter"], args["issued"],
                             args["expires"], args["arch"], args["files"], args["policy"], args["key_ops"])


def test_fixture_from_cpython_parses_to_the_same_values():
    data, want = read_fixture()
    manifest_len, sigblock_len = b.parse_header(data[:b.HEADER_LEN])
    assert (manifest_len, sigblock_len) == (want["manifest_len"], want["sigblock_len"])
    mbytes = data[14:14 + manifest_len]
    m = b.parse_manifest(mbytes)
    assert m.product == want["product"] and list(m.boards) == want["boards"] and m.version == want["version"]
    assert (m.counter, m.issued, m.expires) == (want["counter"], want["issued"], want["expires"])
    assert (m.arch, m.policy) == (want["arch"], want["policy"])
    assert [[p, s, hx(d)] for p, s, d in m.files] == want["files"]
    assert [[op, alg, hx(pub)] for op, alg, pub in m.key_ops] == want["key_ops"]
    assert b.software_id(mbytes) == want["software_id"] == hx(hashlib.sha256(mbytes).digest())
    sigs = b.parse_sigblock(data[14 + manifest_len:14 + manifest_len + sigblock_len])
    assert [[alg, hx(kid), len(sig)] for alg, kid, sig in sigs] == want["signatures"]
    # The keys CPython signed with are the ones the manifest adds: the device computes the same key ids.
    assert [b.key_id(alg, pub) for _, alg, pub in m.key_ops] == [kid for _, kid, _ in sigs]
    assert b.signed_message(mbytes) == b"umeter bundle v1\x00" + hashlib.sha256(mbytes).digest()
    at = 14 + manifest_len + sigblock_len
    for path, size, digest in m.files:
        assert hashlib.sha256(data[at:at + size]).digest() == digest
        at += size
    assert at == len(data) == at + 0 and m.payload_size() == len(data) - 14 - manifest_len - sigblock_len


def test_round_trip_with_u32_edge_values():
    data = manifest()
    m = b.parse_manifest(data)
    assert m.counter == 0xFFFFFFFF and m.issued == (1 << 32) - 2 and m.expires == (1 << 32) - 1
    assert m.files == files(3) and m.policy == b.POLICY_LMS and m.key_ops == [(1, 1, bytes(32))]
    assert manifest() == data   # deterministic
    with raises(ValueError, match="does not fit"):
        manifest(counter=1 << 32)


def test_every_single_byte_change_of_the_fixture_manifest():
    data, want = read_fixture()
    mlen = want["manifest_len"]
    mbytes = data[14:14 + mlen]
    accepted = refused = 0
    for i in range(mlen):
        bad = bytearray(mbytes)
        bad[i] ^= 0x41
        try:
            m = b.parse_manifest(bytes(bad))
        except ValueError as e:
            assert str(e).startswith("manifest: ")
            refused += 1
            continue
        accepted += 1
        # Accepted only as another canonical manifest (a different software id, so every signature fails).
        again = b.encode_manifest(m.boards, m.version, m.counter, m.issued, m.expires, m.arch, m.files,
                                  m.policy, m.key_ops, m.product)
        assert again == bytes(bad) and b.software_id(again) != want["software_id"]
    print("single-byte changes of a %d-byte manifest: %d refused, %d accepted as other values"
          % (mlen, refused, accepted))
    assert refused > 0


def test_refusals_with_reasons():
    good = manifest()
    for data, why in ((good[:-1], "runs past the end"), (good + b"\x0b\x00\x00", "unknown tag 0x0b"),
                      (b"\x02" + good[1:], "unknown manifest version 0x02")):
        with raises(b.BundleError, match=why):
            b.parse_manifest(data)
    for path, why in (("../x", "starts with '.'"), ("umeter/../x", ".."), ("main.py", "boot stage")):
        with raises(ValueError, match=why):
            b.check_path(path)
    with raises(b.BundleError, match="unsigned"):
        b.parse_sigblock(b"\x00")
    with raises(b.BundleError, match="magic"):
        b.parse_header(b"UMTRBNDX" + bytes(6))


def test_parse_memory_is_bounded():
    # The largest FILE list that fits: 96 files with ~70-byte fields (manifest near its 8 KB limit).
    big = [("board.py", 1, bytes(32))]
    big += [("umeter/%s%02d.mpy" % ("p" * 30, i), 1, bytes(32)) for i in range(95)]
    data = manifest(files=big, key_ops=[(b.KEY_ADD, b.ALG_ED25519, bytes(32))] * 8)
    sig = bytes(4) + b"\x00\x00\x00\x03" + bytes(32 * 68) + b"\x00\x00\x00\x06" + bytes(320)
    sigblock = b.encode_sigblock([(b.ALG_LMS, b"k%07d" % i, sig) for i in range(4)])
    gc.collect()
    gc.disable()      # nothing freed while we count: the delta is everything the parse allocated
    try:
        before = gc.mem_alloc()
        m = b.parse_manifest(data)
        manifest_bytes = gc.mem_alloc() - before
        before = gc.mem_alloc()
        entries = b.parse_sigblock(sigblock)
        sigblock_bytes = gc.mem_alloc() - before
    finally:
        gc.enable()
    gc.collect()
    before = gc.mem_alloc()
    del m
    gc.collect()
    kept = before - gc.mem_alloc()
    assert len(entries) == 4
    word = 8 if sys.maxsize > (1 << 32) else 4
    print("parse_manifest(%d bytes, 96 files, 8 keys): %d bytes allocated in all, %d kept by the Manifest; "
          "parse_sigblock(%d bytes): %d bytes (word %d)" % (len(data), manifest_bytes, kept, len(sigblock),
                                                           sigblock_bytes, word))
    # Bounded by the input, whatever it holds: a manifest of at most 8 KB costs at most 5 words per byte of
    # it, of which the result keeps under half; a signature block costs its size plus a little.
    assert manifest_bytes < 5 * b.MAX_MANIFEST * word // 4
    assert kept < manifest_bytes // 2 + 1024
    assert sigblock_bytes < len(sigblock) + 512 * word
