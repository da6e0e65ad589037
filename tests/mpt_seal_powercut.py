# Nonce uniqueness across 1,000 random power cuts: the firmware's sealer on the real Journal over the NOR
# simulator, booting like the app (rollback check -> resume the chain -> seal with journal.next_seq).
# A spy on the flash records which sealed records had ciphertext in a program call (even a torn one).
# Checked: no (key epoch, seq) pair whose ciphertext may have reached the flash is ever sealed again with
# other content; every record on flash is the one sealed for its nonce; the flash opens as one chain.
import random
import struct

from mptest import tmpdir
from sim.nor import NorFlash, PowerCut
from umeter.crypto import rollback, seal
from umeter.hal.keystore_file import open_keystore
from umeter.store import Journal

HEAPSIZE = "448K"  # board-like: the 32-bit lane runs in 256K; 64-bit objects (imports: +35%) need more,
#                    and 320K was short on 64-bit when a run sealed more records than usual
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


class NonceBook:
    """(epoch, seq) -> the first FP bytes of the tag, for every record whose ciphertext reached a program
    call. Flat 12-byte entries (seq u32, epoch u32, fingerprint) in 6 KB chunks, sorted by seq: no heap
    object per entry (on 32-bit ports every int >= 2**30 is one, and thousands of them in a dict
    fragment a board-sized heap) and no large block to grow. The journal hands out seqs in increasing
    order, so entries are appended; one out of order (a journal bug) goes to a short side list and is
    still found."""

    ENTRY = 12
    FP = 4
    CHUNK = 512  # entries per chunk

    def __init__(self):
        self._chunks = []
        self._late = []  # (epoch, seq, fingerprint) added below the newest seq
        self.n = 0

    def __len__(self):
        return self.n + len(self._late)

    def _field(self, i, at):
        c = self._chunks[i // self.CHUNK]
        return struct.unpack_from("<I", c, (i % self.CHUNK) * self.ENTRY + at)[0]

    def get(self, epoch, seq):
        """The fingerprint stored for (epoch, seq), or None."""
        lo, hi = 0, self.n
        while lo < hi:  # first entry with a seq >= seq
            mid = (lo + hi) // 2
            if self._field(mid, 0) < seq:
                lo = mid + 1
            else:
                hi = mid
        while lo < self.n and self._field(lo, 0) == seq:
            if self._field(lo, 4) == epoch:
                o = (lo % self.CHUNK) * self.ENTRY + 8
                return bytes(self._chunks[lo // self.CHUNK][o:o + self.FP])
            lo += 1
        for e, q, fp in self._late:
            if e == epoch and q == seq:
                return fp
        return None

    def add(self, epoch, seq, tag):
        assert 0 < seq < 2 ** 30 and 0 <= epoch < 2 ** 30  # this test's range: small ints on every port
        if self.n and seq < self._field(self.n - 1, 0):
            self._late.append((epoch, seq, bytes(tag[:self.FP])))
            return
        if self.n % self.CHUNK == 0:
            self._chunks.append(bytearray(self.CHUNK * self.ENTRY))
        c = self._chunks[self.n // self.CHUNK]
        o = (self.n % self.CHUNK) * self.ENTRY
        struct.pack_into("<II", c, o, seq, epoch)
        c[o + 8:o + self.ENTRY] = tag[:self.FP]
        self.n += 1


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
    # 16 sectors: the ring wraps many times; the image lives in a file (off the heap, as on a board)
    dev = Spy(NorFlash(16 * 4096, seed=3, path=tmpdir() + "/" + name + ".img"))
    ks = open_keystore(tmpdir() + "/" + name)
    ks.provision(KEY)
    on_flash = NonceBook()  # records whose ciphertext reached a program call
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
                assert on_flash.get(s.epoch, seq) is None, "nonce reused: epoch %d seq %d" % (s.epoch, seq)
                dev.rec, dev.touched = rec, False
                try:
                    assert j.append(rec) == seq
                except PowerCut:
                    torn += dev.touched
                    raise
                finally:
                    if dev.touched:
                        on_flash.add(s.epoch, seq, seal.tag_of(rec))
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
        assert on_flash.get(epoch, seq) == seal.tag_of(rec)[:NonceBook.FP]
    # (each boot starts a chain with an anchor, so even the oldest surviving record usually verifies)
    assert n >= 16 and op.unverified <= 1 and op.verified == n - op.unverified
    print("cuts", cuts, "torn appends with ciphertext", torn, "sealed", counter,
          "cut before ciphertext reached flash", resealed, "on flash now", n, "epochs", ks.epoch,
          "nonce book entries", len(on_flash))
    assert torn > 100  # the cuts really hit records in flight


def test_nonce_unique_across_power_cuts_with_journal_next_seq():
    run(False, "plain")


def test_nonce_unique_across_power_cuts_with_epoch_per_boot():
    run(True, "per_boot")


def test_nonce_book_finds_what_it_holds_in_and_out_of_order():
    book = NonceBook()
    for seq in range(1, 3000, 3):  # two chunks
        book.add(7, seq, bytes((seq & 0xFF, 1, 2, 3, 4)))
    book.add(8, 2998, b"\xaa\xbb\xcc\xdd")  # same seq, other epoch
    book.add(9, 2, b"\x01\x02\x03\x04")     # out of order
    assert len(book) == 1002
    assert book.get(7, 4) == bytes((4, 1, 2, 3)) and book.get(7, 2998) == bytes((2998 & 0xFF, 1, 2, 3))
    assert book.get(8, 2998) == b"\xaa\xbb\xcc\xdd" and book.get(9, 2) == b"\x01\x02\x03\x04"
    assert book.get(7, 2) is None and book.get(7, 5) is None and book.get(8, 4) is None
    assert all(book.get(7, seq) is not None for seq in range(1, 3000, 3))
