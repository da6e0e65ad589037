# Nonce uniqueness across 1,000 random power cuts: the firmware's sealer on the real Journal over the NOR
# simulator, booting like the app (rollback check -> resume the chain -> seal with journal.next_seq).
# A spy on the flash records which sealed records had ciphertext in a program call (even a torn one).
# Checked: no (key epoch, seq) pair whose ciphertext may have reached the flash is ever sealed again with
# other content; every record on flash is the one sealed for its nonce; the flash opens as one chain.
import random

from mptest import tmpdir
from sim.nor import NorFlash, PowerCut
from umeter.crypto import rollback, seal
from umeter.hal.keystore_file import open_keystore
from umeter.store import Journal

HEAPSIZE = "4M"
TIMEOUT = 600
CUTS = 1000
KEY = bytes(range(7, 39))


class Spy:
    """The flash device, noting whether the record being appended had ciphertext in a program call."""

    def __init__(self, flash):
        self.f = flash
        self.size, self.sector_size, self.page_size = flash.size, flash.sector_size, flash.page_size
        self.rec = None
        self.touched = False

    def read(self, addr, n):
        return self.f.read(addr, n)

    def erase_sector(self, addr):
        self.f.erase_sector(addr)

    def program(self, addr, data):
        rec = self.rec
        if rec is not None and not self.touched:
            d = bytes(data)
            # the journal programs (its header + rec) in page pieces: a piece holding the first
            # ciphertext byte holds the whole sealed header before it, a later piece is a slice of rec
            self.touched = rec[:seal.HEADER_LEN + 1] in d or (len(d) >= 8 and d in rec)
        self.f.program(addr, data)


def _fingerprint(rec):
    # 56 bits of the tag as a small int: no heap object per entry, so the table does not fragment the heap
    t = seal.tag_of(rec)
    return int.from_bytes(t[:7], "big")


def boot(dev, ks, rotate_per_boot):
    while True:
        try:
            j = Journal(dev)
            break
        except PowerCut:  # a mount that repairs may itself be cut
            dev.f.power_on()
    v = rollback.check(j, ks.mark(), seal.Opener(ks))
    assert v.ok, v  # power cuts are not tampering
    # the journal's own figure names the newest record the walk found, and the next nonce is above it
    assert j.last_seq == v.last_seq, (j.last_seq, v.last_seq)
    assert j.next_seq > j.last_seq
    epoch = ks.rotate() if rotate_per_boot else ks.epoch
    s = seal.Sealer(ks, epoch)
    s.resume(v.last_seq, v.last_tag)
    return j, s


def run(rotate_per_boot, name):
    random.seed(11 if rotate_per_boot else 12)
    dev = Spy(NorFlash(16 * 4096, seed=3))  # 16 sectors: the ring wraps many times
    ks = open_keystore(tmpdir() + "/" + name)
    ks.provision(KEY)
    on_flash = {}   # (epoch << 48 | seq) -> fingerprint of a record whose ciphertext reached a program call
    resealed = 0    # nonces sealed again after a cut that left no ciphertext on flash (allowed)
    counter = cuts = torn = 0   # torn: appends cut after ciphertext went to the flash
    j, s = boot(dev, ks, rotate_per_boot)
    while cuts < CUTS:
        dev.f.arm_cut(random.randint(1, 24))
        try:
            while True:
                seq = j.next_seq
                counter += 1
                rec = s.seal(seq, b"reading %06d " % counter + bytes(random.randint(0, 60)))
                nonce = (s.epoch << 48) | seq
                assert nonce not in on_flash, "nonce reused: epoch %d seq %d" % (s.epoch, seq)
                dev.rec, dev.touched = rec, False
                try:
                    assert j.append(rec) == seq
                except PowerCut:
                    torn += dev.touched
                    raise
                finally:
                    if dev.touched:
                        on_flash[nonce] = _fingerprint(rec)
                    else:
                        resealed += 1
                    dev.rec = None
                if seq % 8 == 0:
                    rollback.checkpoint(ks, seq, s.last_tag)
        except PowerCut:
            cuts += 1
            dev.f.power_on()
            j, s = boot(dev, ks, rotate_per_boot)
    dev.f.disarm_cut()
    op = seal.Opener(ks)
    n = 0
    for seq, rec in j.records():
        n += 1
        op.open(seq, rec)
        epoch = (rec[3] << 24) | (rec[4] << 16) | (rec[5] << 8) | rec[6]
        assert on_flash[(epoch << 48) | seq] == _fingerprint(rec)
    # (each boot starts a chain with an anchor, so even the oldest surviving record usually verifies)
    assert n >= 16 and op.unverified <= 1 and op.verified == n - op.unverified
    print("cuts", cuts, "torn appends with ciphertext", torn, "sealed", counter,
          "cut before ciphertext reached flash", resealed, "on flash now", n, "epochs", ks.epoch)
    assert torn > 100  # the cuts really hit records in flight


def test_nonce_unique_across_power_cuts_with_journal_next_seq():
    run(False, "plain")


def test_nonce_unique_across_power_cuts_with_epoch_per_boot():
    run(True, "per_boot")
