# Rollback detection on the unix port with the firmware's own sealer/opener and the file keystore:
# the boot sequence the app will run (check -> tamper verdict -> rotate -> resume -> checkpoint).
from mptest import raises, tmpdir
from umeter.crypto import rollback, seal
from umeter.hal.keystore_file import open_keystore

KEY = bytes(range(32))


class FakeJournal:
    def __init__(self, records=()):
        self.recs = list(records)

    @property
    def last_seq(self):
        return self.recs[-1][0] if self.recs else 0

    def records(self, since=0):
        for seq, rec in self.recs:
            if seq >= since:
                yield seq, rec

    def append(self, rec):
        seq = self.last_seq + 1
        self.recs.append((seq, rec))
        return seq


def provisioned():
    ks = open_keystore(tmpdir() + "/ks")
    ks.provision(KEY)
    return ks


def write(journal, sealer, ks, n, checkpoint_every=4):
    for _ in range(n):
        seq = journal.last_seq + 1
        journal.append(sealer.seal(seq, b"reading %d" % seq))
        if seq % checkpoint_every == 0:
            rollback.checkpoint(ks, seq, sealer.last_tag)


def test_boot_sequence_ok_then_rollback_then_recovery():
    ks = provisioned()
    j = FakeJournal()
    v = rollback.check(j, ks.mark(), seal.Opener(ks))
    assert v.status == rollback.FRESH
    s = seal.Sealer(ks, ks.epoch)
    s.resume(v.last_seq, v.last_tag)
    write(j, s, ks, 10)
    assert ks.mark()[0] == 8
    old_image = FakeJournal(j.recs[:6])
    write(j, s, ks, 6)  # mark now at 16

    # reboot on the genuine flash
    v = rollback.check(j, ks.mark(), seal.Opener(ks))
    assert v.status == rollback.OK and v.last_seq == 16 and v.last_tag == s.last_tag

    # reboot on an old image: detected; the app rotates, records the event, carries on
    v = rollback.check(old_image, ks.mark(), seal.Opener(ks))
    assert v.status == rollback.ROLLED_BACK and v.must_rotate and v.last_seq == 6
    s2 = seal.Sealer(ks, ks.rotate())
    s2.resume(v.last_seq, v.last_tag)
    seq = old_image.append(s2.seal(7, b"TAMPER " + v.reason.encode()))
    with raises(ValueError):  # no exception after a tamper verdict: seq 7 < 16 under the same position
        rollback.checkpoint(ks, seq, s2.last_tag)
    ks.advance_mark(seq, s2.last_tag, s2.epoch)  # (epoch 2, seq 7) is past (epoch 0, seq 16): forward
    assert ks.high_water().position == (2, 7)
    # seq 7 was used before under epoch 1; the new record is under epoch 2: different key and nonce
    assert old_image.recs[6][1][3:7] == b"\0\0\0\2" and j.recs[6][1][3:7] == b"\0\0\0\1"
    write(old_image, s2, ks, 5)
    v = rollback.check(old_image, ks.mark(), seal.Opener(ks))
    assert v.status == rollback.OK
    # the whole image, old epoch and new, still opens as one chain
    op = seal.Opener(ks)
    got = [op.open(seq, rec) for seq, rec in old_image.recs]
    assert got[6].startswith(b"TAMPER") and got[-1] == b"reading 12" and op.verified == 12


def test_chain_broken_after_mark_on_device():
    ks = provisioned()
    j = FakeJournal()
    s = seal.Sealer(ks, ks.epoch)
    write(j, s, ks, 12, checkpoint_every=8)
    for image in (j.recs[:9] + j.recs[10:],  # deletion after the mark
                  j.recs[:7] + j.recs[8:],  # the mark's record deleted
                  j.recs[:9] + [(10, j.recs[9][1][:20] + b"\xff" + j.recs[9][1][21:])] + j.recs[10:]):
        v = rollback.check(FakeJournal(image), ks.mark(), seal.Opener(ks))
        assert v.status == rollback.CHAIN_BROKEN and v.must_rotate, v
        assert v.last_seq == 12
