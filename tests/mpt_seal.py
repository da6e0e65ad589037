# Sealed records on the MicroPython unix port: round trip, tamper, chain, keys, viper twin, heap.
import gc
import os

import micropython
from mptest import raises
from umeter.crypto import SealError, TamperError, WrongKeyError, UnknownAlgorithm, KeyMissing
from umeter.crypto import seal

KEY_A = bytes(range(32))
KEY_B = bytes(range(100, 132))


class Ring:
    """Keyring: {first epoch: master}."""

    def __init__(self, keys):
        self.keys = keys

    def master_for(self, epoch):
        found = None
        for first in sorted(self.keys):
            if first <= epoch:
                found = self.keys[first]
        if found is None:
            raise KeyMissing("no key for epoch %d" % epoch)
        return found


def payload(i, n=64):
    return bytes(((i * 31 + j * 7) & 0xFF) for j in range(n))


def chain(count, key=KEY_A, epoch=1, start=1, **kw):
    s = seal.Sealer(Ring({0: key}), epoch, **kw)
    return [(seq, s.seal(seq, payload(seq))) for seq in range(start, start + count)]


def open_all(records, key=KEY_A):
    op = seal.Opener(Ring({0: key}))
    return [op.open(seq, rec) for seq, rec in records], op


def test_round_trip_all_modes_and_sizes():
    for mode in (seal.MODE_VIPER, seal.MODE_PYTHON):
        s = seal.Sealer(Ring({0: KEY_A}), 7, ctr=mode, anchor_every=4)
        op = seal.Opener(Ring({0: KEY_A}), ctr=mode)
        for seq, n in enumerate((1, 15, 16, 17, 64, 100, 255, s.max_payload), 1):
            p = payload(seq, n)
            plain, anchored = s.overhead(), s.overhead(anchor=True)
            rec = s.seal(seq, p)
            assert len(rec) == n + (anchored if rec[2] & seal.FLAG_ANCHOR else plain)
            if n >= 16:
                assert p not in rec  # encrypted
            assert op.open(seq, rec) == p
        assert op.verified == 8 and op.unverified == 0


def test_record_layout_and_overhead():
    s = seal.Sealer(Ring({0: KEY_A}), 0x01020304)
    first = s.seal(1, payload(1))
    second = s.seal(2, payload(2))
    assert first[0] == seal.FORMAT_VERSION and first[1] == seal.ALG_CTR_HS256_128
    assert first[2] == seal.FLAG_ANCHOR and second[2] == 0  # a new chain starts with an anchor
    assert first[3:7] == b"\x01\x02\x03\x04"
    assert first[7:9] == second[7:9]  # key check value
    assert first[9] == 0  # genesis: empty predecessor tag
    assert len(second) - 64 == seal.HEADER_LEN + 16 == s.overhead()
    assert seal.tag_of(first) == first[-16:]
    assert s.last_tag == second[-16:]


def test_every_single_byte_change_is_detected():
    records = chain(4, anchor_every=3)  # seqs 1 (anchor), 2, 3 (anchor), 4
    for target in (1, 2):  # a plain record and an anchor record
        seq, rec = records[target]
        for i in range(len(rec)):
            for flip in (0x01, 0x80, 0xFF):
                bad = bytearray(rec)
                bad[i] ^= flip
                op = seal.Opener(Ring({0: KEY_A}))
                for s2, r2 in records[:target]:
                    op.open(s2, r2)
                with raises(SealError):
                    op.open(seq, bytes(bad))
        op = seal.Opener(Ring({0: KEY_A}))
        for s2, r2 in records[:target]:
            op.open(s2, r2)
        with raises(TamperError):
            op.open(seq, rec[:-1])


def test_tampered_ciphertext_or_tag_is_a_tamper_error():
    records = chain(3)
    seq, rec = records[1]
    for i in range(seal.HEADER_LEN, len(rec)):
        bad = bytearray(rec)
        bad[i] ^= 0x10
        op = seal.Opener(Ring({0: KEY_A}))
        op.open(*records[0])
        with raises(TamperError, match="seq 2"):
            op.open(seq, bytes(bad))


def test_swap_delete_splice_replay_detected():
    records = chain(6)
    ok, op = open_all(records)
    assert ok == [payload(i) for i in range(1, 7)] and op.verified == 6
    swapped = records[:2] + [records[3], records[2]] + records[4:]
    with raises(TamperError):
        open_all(swapped)
    deleted = records[:2] + records[3:]
    with raises(TamperError, match="seq 4"):
        open_all(deleted)
    other = chain(6, key=KEY_B)  # another meter's records, same seq numbers
    with raises(TamperError):
        open_all(records[:3] + other[3:])
    with raises(TamperError):
        open_all(records[:3] + [other[3]] + records[4:])
    same_key_other_chain = chain(6, start=1, anchor_every=2)
    with raises(TamperError):
        open_all(records[:3] + same_key_other_chain[3:])
    with raises(TamperError, match="out of order"):
        open_all(records[:4] + [records[1]])
    with raises(TamperError):  # record re-labelled with another sequence number
        open_all(records[:2] + [(4, records[2][1])])


def test_ring_retention_starts_at_oldest_surviving_record():
    records = chain(12, anchor_every=5)  # anchors at seqs 1, 6, 11
    got, op = open_all(records[3:])  # oldest surviving: seq 4, plain record
    assert got[0] is None and got[1:] == [payload(i) for i in range(5, 13)]
    assert op.unverified == 1 and op.verified == 8
    got, op = open_all(records[5:])  # oldest surviving: seq 6, an anchor: verified in full
    assert got == [payload(i) for i in range(6, 13)] and op.unverified == 0
    # the head's tag is only a link: a head replaced by another genuine record breaks at the next one
    s = seal.Sealer(Ring({0: KEY_A}), 1)
    other = [(seq, s.seal(seq, payload(seq + 100))) for seq in range(1, 6)]
    with raises(TamperError, match="seq 5"):
        open_all([other[3]] + records[4:])


def test_trust_from_high_water_mark():
    records = chain(5)
    op = seal.Opener(Ring({0: KEY_A}))
    op.trust(3, seal.tag_of(records[2][1]))
    assert op.open(*records[3]) == payload(4)
    op2 = seal.Opener(Ring({0: KEY_A}))
    op2.trust(3, b"\x00" * 16)
    with raises(TamperError):
        op2.open(*records[3])


def test_reset_resyncs_after_a_break():
    # an exporter reports the break, resets and retries the same record as a new chain head
    def walk(records):
        op = seal.Opener(Ring({0: KEY_A}))
        out = []
        for seq, rec in records:
            try:
                out.append(op.open(seq, rec))
            except TamperError:
                op.reset()
                out.append("break")
                out.append(op.open(seq, rec))
        return out

    records = chain(7, anchor_every=3)  # anchors at 1, 4, 7
    # seq 3 missing: the anchor at seq 4 names seq 3's tag; on its own it verifies in full
    expect = [payload(1), payload(2), "break"] + [payload(i) for i in (4, 5, 6, 7)]
    assert walk(records[:2] + records[3:]) == expect
    # seq 4 missing: seq 5 is a plain record; as a new head it can only be a link (None)
    assert walk(records[:3] + records[4:]) == [payload(1), payload(2), payload(3), "break", None, payload(6),
                                               payload(7)]


def test_wrong_key_is_clear_and_never_shows_the_key():
    records = chain(3)
    op = seal.Opener(Ring({0: KEY_B}))
    with raises(WrongKeyError) as e:
        op.open(*records[0])
    text = str(e.value) + repr(e.value)
    assert "key" in text
    for secret in (KEY_A, KEY_B):
        assert repr(secret) not in text and secret.hex() not in text and secret.hex().upper() not in text
    with raises(WrongKeyError):  # also for a chain head that cannot be verified
        seal.Opener(Ring({0: KEY_B})).open(*records[1])
    with raises(KeyMissing, match="epoch"):
        seal.Opener(Ring({5: KEY_A})).open(*records[0])
    assert "<Hmac>" == repr(seal.Hmac(KEY_A))
    assert KEY_A.hex() not in repr(seal._Keys(KEY_A, 1, 1))


def test_epoch_rotation_and_algorithm_agility_keep_old_records_readable():
    ring = Ring({1: KEY_A, 3: KEY_B})  # re-keyed at epoch 3
    s = seal.Sealer(ring, 1)
    recs = [(1, s.seal(1, payload(1))), (2, s.seal(2, payload(2)))]
    s.rotate(2)  # same master, new epoch: new derived keys
    recs += [(3, s.seal(3, payload(3))), (4, s.seal(4, payload(4)))]
    s.rotate(3, alg=seal.ALG_CTR_HS256_256)
    recs += [(5, s.seal(5, payload(5))), (6, s.seal(6, payload(6)))]
    assert [r[3:7] for _, r in recs] == [b"\0\0\0\1"] * 2 + [b"\0\0\0\2"] * 2 + [b"\0\0\0\3"] * 2
    assert recs[2][1][2] == seal.FLAG_ANCHOR and recs[4][1][1] == seal.ALG_CTR_HS256_256
    assert len(recs[5][1]) == 64 + seal.HEADER_LEN + 32
    got, op = [], seal.Opener(ring)
    for seq, rec in recs:
        got.append(op.open(seq, rec))
    assert got == [payload(i) for i in range(1, 7)]
    with raises(SealError, match="backwards"):
        s.rotate(2)
    with raises(TamperError, match="epoch"):  # an old-epoch record after a newer one
        op.open(7, seal.Sealer(ring, 2).seal(7, payload(7)))


def test_unknown_version_algorithm_flags():
    seq, rec = chain(1)[0]
    for i, v, msg in ((0, 9, "version"), (1, 77, "algorithm"), (2, 0x81, "flags")):
        bad = bytearray(rec)
        bad[i] = v
        with raises(UnknownAlgorithm, match=msg):
            seal.Opener(Ring({0: KEY_A})).open(seq, bytes(bad))
    with raises(UnknownAlgorithm):
        seal.Sealer(Ring({0: KEY_A}), 1, alg=99)


def test_nonce_reuse_refused_and_counter_blocks_unique():
    s = seal.Sealer(Ring({0: KEY_A}), 1)
    s.seal(5, payload(5))
    for seq in (5, 4, 0):
        with raises(SealError, match="seq"):
            s.seal(seq, payload(5))
    s.rotate(2)  # new epoch key: but the chain still only moves forward
    with raises(SealError):
        s.seal(5, payload(5))
    s.seal(6, payload(6))
    with raises(SealError, match="payload length"):
        s.seal(7, b"")
    with raises(SealError, match="payload length"):
        s.seal(7, bytes(s.max_payload + 1))
    # the keystream differs for every (epoch, seq): same plaintext, different ciphertexts
    zeros = bytes(32)
    cts = set()
    for epoch in (1, 2):
        t = seal.Sealer(Ring({0: KEY_A}), epoch)
        for seq in range(1, 50):
            rec = t.seal(seq, zeros)
            cts.add(rec[-16 - 32:-16])
    assert len(cts) == 98


def test_resume_continues_the_chain():
    first = chain(3)
    s = seal.Sealer(Ring({0: KEY_A}), 1)
    s.resume(3, seal.tag_of(first[2][1]))
    more = [(seq, s.seal(seq, payload(seq))) for seq in (5, 6)]  # seq 4 lost to a torn write
    assert more[0][1][2] == seal.FLAG_ANCHOR and more[1][1][2] == 0
    got, op = open_all(first + more)
    assert got == [payload(i) for i in (1, 2, 3, 5, 6)] and op.gaps == 1


def test_viper_xor_and_counter_blocks_equal_plain_python():
    for n in (1, 3, 16, 31, 64, 200):
        src = os.urandom(n)
        ks = os.urandom(n)
        a = bytearray(n + 5)
        b = bytearray(n + 5)
        seal.xor_into(a, 5, src, ks, n, seal.MODE_VIPER)
        seal.xor_into(b, 5, src, ks, n, seal.MODE_PYTHON)
        assert a == b and a[5:] == bytes(x ^ y for x, y in zip(src, ks)) and a[:5] == bytes(5)
    iv = os.urandom(12)
    for nb in (1, 2, 4, 7):
        for first in (0, 4, 2 ** 20 + 3):
            a = bytearray(16 * nb)
            b = bytearray(16 * nb)
            seal._ctr_fill_viper(a, iv, first, nb)
            seal._ctr_fill_python(b, iv, first, nb)
            assert a == b and a[16 * (nb - 1) + 12:16 * nb] == (first + nb - 1).to_bytes(4, "big")
            assert all(a[16 * i:16 * i + 12] == iv for i in range(nb))
    v = seal.Sealer(Ring({0: KEY_A}), 4, ctr=seal.MODE_VIPER, anchor_every=3)
    p = seal.Sealer(Ring({0: KEY_A}), 4, ctr=seal.MODE_PYTHON, anchor_every=3)
    for seq in range(1, 20):
        data = payload(seq, seq * 13)
        assert v.seal(seq, data) == p.seal(seq, data)


def test_keystream_and_xor_allocate_nothing():
    ctr = seal._Ctr(256, seal.MODE_VIPER)
    k = seal._Keys(KEY_A, 1, 1)
    src = payload(1, 200)
    out = bytearray(220)
    ctr.crypt(k, 1, src, out, 9, 64)  # the first call builds the cipher
    micropython.heap_lock()
    try:
        for seq in range(2, 50):
            ctr.crypt(k, seq, src, out, 9, 1 + seq * 4)  # any length: 4-block chunks, one buffer
    finally:
        micropython.heap_unlock()
    assert out[9:209] != src
    assert len(ctr.buf) == seal.CTR_CHUNK  # not record-sized


def test_sealing_a_64_byte_payload_allocates_little():
    s = seal.Sealer(Ring({0: KEY_A}), 1)
    out = bytearray(64 + seal.MAX_OVERHEAD)
    data = payload(1)
    s.seal_into(1, data, out)
    s.seal_into(2, data, out)
    gc.collect()
    gc.disable()
    try:
        before = gc.mem_alloc()
        for seq in range(3, 103):
            s.seal_into(seq, data, out)
        per_record = (gc.mem_alloc() - before) // 100
    finally:
        gc.enable()
    print("bytes allocated per 64-byte seal:", per_record)
    micropython.mem_info()
    # HMAC needs two hashlib objects and two digests per record (no copy() in MicroPython), nothing more
    assert per_record <= 768, per_record


def _alloc_per_record(fn, seqs):
    fn(seqs[0])
    fn(seqs[1])
    gc.collect()
    gc.disable()
    try:
        before = gc.mem_alloc()
        for seq in seqs[2:]:
            fn(seq)
        return (gc.mem_alloc() - before) // (len(seqs) - 2)
    finally:
        gc.enable()


def _seal_open_alloc(epoch, base):
    seqs = [base + i for i in range(1, 43)]
    s = seal.Sealer(Ring({0: KEY_A}), epoch)
    recs = {}
    for seq in seqs:
        recs[seq] = s.seal(seq, payload(seq))
    t = seal.Sealer(Ring({0: KEY_A}), epoch)
    out = bytearray(64 + seal.MAX_OVERHEAD)
    data = payload(1)
    sealing = _alloc_per_record(lambda seq: t.seal_into(seq, data, out), seqs)
    op = seal.Opener(Ring({0: KEY_A}))
    plain = bytearray(64)
    opening = _alloc_per_record(lambda seq: op.open_into(seq, recs[seq], plain), seqs)
    assert op.verified == len(seqs) and op.gaps == 0
    return sealing, opening


def test_48_bit_seqs_and_high_epochs_cost_no_extra_allocation():
    # On 32-bit ports a seq or epoch >= 2**30 is a heap int: per record the sealer and opener must not
    # compute with them (no sums, shifts or dict keys), so the figures equal those of small values.
    small = _seal_open_alloc(1, 0)
    big = _seal_open_alloc(0xFFFFFFF0, 2 ** 47 - 20)
    print("bytes per record (seal_into, open_into): small seqs", small, "48-bit seqs, epoch 2**32-16", big)
    assert big == small
    assert small[0] <= 768 and small[1] <= 768


def test_gap_check_on_packed_seqs_equals_integer_arithmetic():
    import struct

    cases = [(1, 2), (1, 3), (0xFF, 0x100), (0xFF, 0x101), (0xFFFF, 0x10000), (2 ** 30 - 1, 2 ** 30),
             (2 ** 40 - 1, 2 ** 40), (2 ** 48 - 2, 2 ** 48 - 1), (0x1FF, 0x200), (0x1FF, 0x300),
             (0x01FF, 0x0200 + 2 ** 40), (5, 5), (6, 5), (2 ** 63 - 1, 2 ** 63), (2 ** 64 - 1, 0)]
    a = bytearray(8)
    b = bytearray(8)
    for x, y in cases:
        struct.pack_into(">Q", a, 0, x)
        struct.pack_into(">Q", b, 0, y)
        assert seal._follows(a, b) == (1 if y == x + 1 else 0), (x, y)


def test_gaps_and_epoch_order_with_48_bit_seqs():
    s = seal.Sealer(Ring({0: KEY_A}), 0x7FFFFFFF)
    base = 2 ** 47
    recs = [(seq, s.seal(seq, payload(seq))) for seq in (base - 1, base, base + 2, base + 3)]
    s.rotate(0x80000000)
    recs += [(base + 4, s.seal(base + 4, payload(4)))]
    got, op = open_all(recs)
    assert got == [payload(seq) for seq, _ in recs[:4]] + [payload(4)]
    assert op.gaps == 1 and op.verified == 5
    old = seal.Sealer(Ring({0: KEY_A}), 0x7FFFFFFF)
    old.resume(base + 4, seal.tag_of(recs[-1][1]))
    with raises(TamperError, match="key epoch 2147483647 after epoch 2147483648"):
        op.open(base + 5, old.seal(base + 5, payload(5)))


def test_opener_memory_stays_flat_over_an_epoch_per_boot():
    # every boot starts a key epoch: an opener walking years of records must not keep every suite
    s = seal.Sealer(Ring({0: KEY_A}), 1)
    op = seal.Opener(Ring({0: KEY_A}))
    used = []
    for seq in range(1, 121):
        s.rotate(seq)
        assert op.open(seq, s.seal(seq, payload(seq))) == payload(seq)
        if seq in (20, 120):
            gc.collect()
            used.append(gc.mem_alloc())
    assert op.verified == 120 and op.gaps == 0
    assert used[1] - used[0] < 2048, used  # bounded suite cache (seal.SUITES), not 100 more key sets
