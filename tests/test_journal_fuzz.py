"""Fuzz: random and adversarial flash images. Mounting, reading and appending raise nothing but
StoreError, always terminate, and never return a record that was not deliberately written whole."""
from binascii import crc32

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sim.nor import NorFlash
from umeter.store import Journal, StoreError
from umeter.store.journal import FORMAT, SEQ_LIMIT

SS = 512
SECTORS = 4
SIZE = SS * SECTORS

seqs = st.one_of(st.integers(0, 40), st.integers(SEQ_LIMIT - 40, SEQ_LIMIT - 1),
                 st.integers(0, SEQ_LIMIT - 1))


def le(v, n):
    return bytes((v >> (8 * k)) & 0xFF for k in range(n))


def sector_header(base, gap, good_crc, claim):
    """The 16 bytes at the start of a sector (JOURNAL.md 1.1)."""
    body = bytes([FORMAT]) + le(base, 6) + le(gap, 4)
    c = crc32(body) if good_crc else crc32(body) ^ 1
    return body + le(c, 4) + bytes([claim])


def sector_trailer(last, rev, epoch):
    """The 40 bytes at the end of a sector: padding, last, erase count, revision, crc, worn, window count."""
    t = le(last, 6) + le(3, 4) + bytes([rev])
    return b"\xff" * 9 + t + le(crc32(t), 4) + b"\xff" + bytes([epoch]) + b"\xff" * 14


def record(seq, payload, length, good_crc, commit):
    head = le(seq, 6) + le(length, 2)
    c = crc32(payload, crc32(head))
    if not good_crc:
        c ^= 0x80
    return bytes([commit]) + head + le(c, 4) + payload


piece = st.one_of(
    st.tuples(st.just("hdr"), st.integers(0, SECTORS - 1), seqs, st.integers(0, 0xFFFFFFFF), st.booleans(),
              st.sampled_from([0xFF, 0x00, 0x7F]), seqs, st.sampled_from([0xFF, 0xFE, 0x00])),
    st.tuples(st.just("void"), st.integers(0, SECTORS - 1), st.integers(16, SS - 14), st.integers(1, 0xFE)),
    st.tuples(st.just("rec"), st.integers(0, SECTORS - 1), st.integers(16, SS - 14), seqs,
              st.binary(min_size=1, max_size=64),
              st.one_of(st.none(), st.integers(0, 0xFFFF)),     # None: the true length; else any length
              st.booleans(), st.sampled_from([0x00, 0xFF, 0x10])),
    st.tuples(st.just("junk"), st.integers(0, SIZE - 1), st.binary(min_size=1, max_size=40)),
    st.tuples(st.just("flip"), st.integers(0, SIZE - 1), st.integers(0, 7)),
)


def build(pieces):
    mem = bytearray(b"\xff" * SIZE)
    genuine = {}
    for p in pieces:
        if p[0] == "hdr":
            _, sec, base, gap, good, claim, last, epoch = p
            mem[sec * SS:sec * SS + 16] = sector_header(base, gap, good, claim)
            mem[sec * SS + SS - 40:sec * SS + SS] = sector_trailer(last, 2 if epoch != 0xFE else 1, epoch)
        elif p[0] == "void":
            _, sec, off, k = p
            mem[sec * SS + off] = k
        elif p[0] == "rec":
            _, sec, off, seq, payload, length, good, commit = p
            length = len(payload) if length is None else length
            r = record(seq, payload, length, good, commit)
            at = sec * SS + off
            r = r[:SS - off]
            mem[at:at + len(r)] = r
            if good and commit == 0 and length == len(payload) and len(r) == 13 + len(payload):
                genuine.setdefault(seq, set()).add(payload)
        elif p[0] == "junk":
            _, at, data = p
            data = data[:SIZE - at]
            mem[at:at + len(data)] = data
        else:
            _, at, bit = p
            mem[at] ^= 1 << bit
    return mem, genuine


def exercise(mem, genuine):
    f = NorFlash(SIZE, sector_size=SS, page_size=256)
    f._mem[:] = mem                       # test-only: load the image behind the simulator's back
    try:
        j = Journal(f)
    except StoreError:
        assert f.read(0, SIZE) == bytes(mem), "a refused image was modified"
        return None
    assert f.read(0, SIZE) == bytes(mem), "mount wrote to the device"
    got = list(j.records())
    prev = -1
    for s, p in got:
        assert s > prev
        prev = s
        assert p in genuine.get(s, ()), "returned a record that was never written whole"
    top = max([s for s, _ in got] + [j.last_seq])
    mine = []
    for k in range(3):
        try:
            s = j.append(b"fuzz%d" % k)
        except StoreError:
            break
        assert s > top and s < SEQ_LIMIT
        top = s
        mine.append((s, b"fuzz%d" % k))
    if mine:
        again = list(Journal(f).records())
        assert again[-len(mine):] == mine
    return got


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(piece, max_size=14))
# head with a damaged trailer and no records, stray byte in the next sector: the new sector got the
# head's base, the remount took the old one for the head and the appends vanished
@example([("hdr", 0, 0, 0, False, 255, 0, 255), ("void", 1, 16, 1), ("hdr", 0, 1, 0, True, 255, 0, 255),
          ("junk", 495, b"\x00\x00")])
# a committed record behind blank space in the head: the appends filled the gap, and the remount
# walked on from them into that record
@example([("hdr", 0, 1, 0, True, 255, 0, 255), ("rec", 0, 70, 4, b"zz", None, True, 0)])
# a record in a sector before the head with a seq above the head's base: it was returned, and the
# appends (below it) then lost to it
@example([("hdr", 0, 5, 0, True, 255, 0, 255), ("hdr", 1, 10, 0, True, 255, 0, 255),
          ("rec", 0, 16, 30, b"zz", None, True, 0)])
def test_adversarial_images(pieces):
    mem, genuine = build(pieces)
    exercise(mem, genuine)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(min_size=SIZE, max_size=SIZE))
def test_random_images(data):
    got = exercise(bytearray(data), {})
    assert not got


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, SIZE - 1), st.integers(0, 7)), min_size=1, max_size=6),
       st.integers(1, 60))
def test_bit_flips_on_a_real_journal(flips, n):
    f = NorFlash(SIZE, sector_size=SS, page_size=256)
    j = Journal(f)
    genuine = {}
    for i in range(n):
        p = bytes([i]) * (1 + i % 50)
        genuine[j.append(p)] = {p}
    mem = bytearray(f.read(0, SIZE))
    for at, bit in flips:
        mem[at] ^= 1 << bit
    exercise(mem, genuine)
