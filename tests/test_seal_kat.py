"""Known-answer tests: the firmware's seal.py on the MicroPython unix port produces exactly what the host
implementation on `cryptography` (meterctl.sealing) produces, for the same keys and inputs, in all three
keystream paths (native CTR via a stand-in cryptolib, viper ECB fallback, plain-Python ECB fallback);
and each side opens the other's records. Plus host-side tamper, chain and key tests."""
import hashlib
import hmac
import os
import random

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from meterctl import sealing

MASTERS = {1: bytes(range(32)), 4: hashlib.sha256(b"second master").digest()}


def scenario():
    """Operations run identically on both sides: rotations (new epoch, new master, new algorithm),
    a resume after a lost seq, anchors, payload sizes around the block size."""
    rnd = random.Random(5)
    ops, seq = [], 0
    for step in range(24):
        if step == 8:
            ops.append(("rotate", 2, 1))
        elif step == 12:
            ops.append(("rotate", 4, 2))
        elif step == 18:
            ops.append(("rotate", 5, 1))
        if step == 15:
            seq += 1  # a seq burnt by a torn write
            ops.append(("resume", seq, None))
        seq += 1 + (step % 5 == 4)
        n = rnd.choice([1, 15, 16, 17, 31, 32, 33, 64, 64, 64, 100, 250])
        ops.append(("seal", seq, rnd.randbytes(n), step in (5, 20)))
    return ops


def host_run(ops):
    s = sealing.Sealer(sealing.Keyring(MASTERS), 1, anchor_every=3)
    out = []
    for op in ops:
        if op[0] == "rotate":
            s.rotate(op[1], op[2])
        elif op[0] == "resume":
            s.resume(op[1] - 1, s.last_tag)
        else:
            out.append((op[1], s.seal(op[1], op[2], anchor=op[3])))
    return out


DEVICE_RUN = """
import binascii
from umeter.crypto import seal
MODE = %r
if MODE == "native":
    import mp_fake_ctr
    fake = mp_fake_ctr.install(seal)
MASTERS = %r
class Ring:
    def master_for(self, epoch):
        return MASTERS[max(e for e in MASTERS if e <= epoch)]
s = seal.Sealer(Ring(), 1, anchor_every=3, ctr=MODE)
for op in %r:
    if op[0] == "rotate":
        s.rotate(op[1], op[2])
    elif op[0] == "resume":
        s.resume(op[1] - 1, s.last_tag)
    else:
        print("REC", op[1], binascii.hexlify(s.seal(op[1], op[2], op[3])).decode())
if MODE == "native":
    print("CTR6", fake.calls)
"""


@pytest.mark.parametrize("mode", ["native", "viper", "python"])
def test_device_seal_equals_host(micropython, mode):
    ops = scenario()
    out = micropython(DEVICE_RUN % (mode, MASTERS, ops))
    device = [(int(line.split()[1]), bytes.fromhex(line.split()[2]))
              for line in out.splitlines() if line.startswith("REC ")]
    host = host_run(ops)
    assert len(device) == len(host) == 24
    for (dseq, drec), (hseq, hrec) in zip(device, host):
        assert dseq == hseq and drec.hex() == hrec.hex(), "seq %d differs" % hseq
    if mode == "native":  # the native path really was taken, once per record
        assert "CTR6 24" in out
    # the host opens and verifies the device's chain end to end
    opened, problems, op = sealing.open_chain(sealing.Keyring(MASTERS), device, resync=False)
    payloads = [o[2] for o in ops if o[0] == "seal"]
    assert [p for _, p in opened] == payloads and not problems and op.gaps == 5


DEVICE_OPEN = """
import binascii
from umeter.crypto import seal
MASTERS = %r
class Ring:
    def master_for(self, epoch):
        return MASTERS[max(e for e in MASTERS if e <= epoch)]
for mode in ("viper", "python"):
    op = seal.Opener(Ring(), ctr=mode)
    for seq, rec in %r:
        print("PAY", mode, seq, binascii.hexlify(op.open(seq, rec)).decode())
    print("COUNT", mode, op.verified, op.unverified)
"""


def test_device_opens_host_records(micropython):
    ops = scenario()
    host = host_run(ops)
    out = micropython(DEVICE_OPEN % (MASTERS, host), heapsize="8M")
    payloads = {o[1]: o[2] for o in ops if o[0] == "seal"}
    for mode in ("viper", "python"):
        got = [line.split() for line in out.splitlines() if line.startswith("PAY " + mode)]
        assert [(int(g[2]), bytes.fromhex(g[3])) for g in got] == [(s, payloads[s]) for s, _ in host]
        assert "COUNT %s 24 0" % mode in out


def test_device_hmac_and_hkdf_equal_reference(micropython):
    rnd = random.Random(9)
    cases = [(rnd.randbytes(k), rnd.randbytes(m)) for k, m in ((0, 0), (1, 3), (32, 64), (64, 65), (65, 1),
                                                               (100, 200), (20, 1000))]
    hk = [(rnd.randbytes(32), rnd.randbytes(s), rnd.randbytes(i), n)
          for s, i, n in ((0, 0, 32), (13, 10, 42), (32, 30, 64), (80, 5, 100))]
    code = """
import binascii
from umeter.crypto import seal
for k, m in %r:
    print("H", binascii.hexlify(seal.Hmac(k).mac(m)).decode())
for ikm, salt, info, n in %r:
    print("K", binascii.hexlify(seal.hkdf_sha256(ikm, salt, info, n)).decode())
""" % (cases, hk)
    out = micropython(code).split()
    hs = [out[i + 1] for i in range(0, len(out), 2) if out[i] == "H"]
    ks = [out[i + 1] for i in range(0, len(out), 2) if out[i] == "K"]
    assert hs == [hmac.new(k, m, hashlib.sha256).hexdigest() for k, m in cases]
    assert ks == [HKDF(hashes.SHA256(), n, salt or None, info).derive(ikm).hex() for ikm, salt, info, n in hk]


def test_device_key_id_equals_host(micropython):
    out = micropython("from umeter.hal.keystore import key_id\nprint(key_id(%r))" % MASTERS[4]).strip()
    assert out == sealing.key_id(MASTERS[4]) and len(out) == 16 and MASTERS[4].hex()[:16] != out


# ---- host side on its own -------------------------------------------------------------------------

def host_chain(count=6, key=MASTERS[1], **kw):
    s = sealing.Sealer(key, 1, **kw)
    return [(seq, s.seal(seq, bytes([seq]) * 40)) for seq in range(1, count + 1)]


def test_host_detects_every_single_byte_change():
    records = host_chain(4, anchor_every=3)
    for target in (1, 2):
        seq, rec = records[target]
        for i in range(len(rec)):
            bad = bytearray(rec)
            bad[i] ^= 0x41
            op = sealing.Opener(MASTERS[1])
            for s2, r2 in records[:target]:
                op.open(s2, r2)
            with pytest.raises(sealing.SealError):
                op.open(seq, bytes(bad))


def test_host_detects_swap_delete_splice_and_reports_each_break():
    records = host_chain(8, anchor_every=4)  # anchors 1, 5
    other = host_chain(8, key=os.urandom(32))
    for bad in (records[:2] + [records[3], records[2]] + records[4:],  # swap
                records[:3] + records[4:],  # delete
                records[:3] + other[3:4] + records[4:]):  # splice from another meter
        with pytest.raises(sealing.TamperError):
            sealing.open_chain(MASTERS[1], bad, resync=False)
    opened, problems, _ = sealing.open_chain(MASTERS[1], records[:3] + records[4:])
    assert [s for s, _ in problems] == [5] and [s for s, _ in opened] == [1, 2, 3, 5, 6, 7, 8]


def test_host_wrong_key_message_has_no_key():
    records = host_chain(2)
    wrong = os.urandom(32)
    with pytest.raises(sealing.WrongKeyError) as e:
        sealing.open_chain(wrong, records, resync=False)
    text = str(e.value) + repr(e.value) + repr(sealing.Keyring(wrong))
    for key in (wrong, MASTERS[1]):
        assert key.hex() not in text and repr(key) not in text
    with pytest.raises(sealing.KeyMissing, match="epoch 1"):
        sealing.open_chain(sealing.Keyring({3: wrong}), records, resync=False)


def test_bench_seal_runs_and_reports(capfd):
    from meterctl import bench_seal

    assert bench_seal.main(["--records", "300"]) == 0
    out = capfd.readouterr().out
    assert "viper" in out and "python" in out and "Added bytes per record: 25" in out
