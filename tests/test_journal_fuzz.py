"""Fuzz: random and adversarial flash images (revision 3). Mounting, reading and appending raise nothing
but StoreError, always terminate, never write at mount, never return a record that was not deliberately
written whole, and appends always land above every seq seen."""
from binascii import crc32

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sim.nor import NorFlash
from umeter.store import Journal, StoreError
from umeter.store import journal_layout as L
from umeter.store.journal import SEQ_LIMIT

SS = 512
SECTORS = 4
SIZE = SS * SECTORS
UNITS = L.max_slots(SS)

bases = st.one_of(st.integers(1, 40), st.integers(SEQ_LIMIT - 4000, SEQ_LIMIT - 1),
                  st.integers(1, SEQ_LIMIT - 1))


def le(v, n):
    return v.to_bytes(n, "little")


def header(base, good):
    body = L.MAGIC + le(base, 6)
    c = crc32(body) ^ (0 if good else 1)
    return body + le(c, 4)


def record(seq, rel, payload, good_h, good_p):
    hdr = le(len(payload), 2) + le(rel, 2)
    pre = le(seq, 6) + hdr
    h = crc32(pre) ^ (0 if good_h else 4)
    p = crc32(payload, crc32(pre)) ^ (0 if good_p else 8)
    return hdr + le(h, 4) + payload + le(p, 4)


piece = st.one_of(
    st.tuples(st.just("hdr"), st.integers(0, SECTORS - 1), bases, st.booleans(), st.booleans()),
    st.tuples(st.just("rec"), st.integers(0, SECTORS - 1), st.integers(0, UNITS - 1), st.integers(-2, 3),
              st.binary(min_size=1, max_size=64), st.booleans(), st.booleans()),
    st.tuples(st.just("vouch"), st.integers(0, SECTORS - 1), st.integers(0, 255)),
    st.tuples(st.just("zero"), st.integers(0, SECTORS - 1)),
    st.tuples(st.just("junk"), st.integers(0, SIZE - 1), st.binary(min_size=1, max_size=40)),
    st.tuples(st.just("flip"), st.integers(0, SIZE - 1), st.integers(0, 7)),
)


def build(pieces):
    mem = bytearray(b"\xff" * SIZE)
    bases_of = {}
    genuine = {}
    for p in pieces:
        if p[0] == "hdr":
            _, sec, base, good, backup = p
            h = header(base, good)
            at = sec * SS + (SS - 32 if backup else 0)
            mem[at:at + 14] = h
            if good:
                bases_of[sec] = base
        elif p[0] == "rec":
            _, sec, unit, delta, payload, gh, gp = p
            base = bases_of.get(sec, 1)
            rel = max(unit - delta, 0)          # delta < 0: rel above the unit, not a place it can be
            seq = base + rel
            off = 16 + 16 * unit
            if off + 12 + len(payload) > SS - 32 or seq >= SEQ_LIMIT:
                continue
            r = record(seq, rel, payload, gh, gp)
            at = sec * SS + off
            mem[at:at + len(r)] = r
            if gh and gp and rel <= unit:
                genuine.setdefault(seq, set()).add(payload)
        elif p[0] == "vouch":
            _, sec, b = p
            mem[sec * SS + SS - 16] = b
        elif p[0] == "zero":
            mem[p[1] * SS:p[1] * SS + 14] = b"\x00" * 14
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
    assert j.last_seq == (got[-1][0] if got else 0) or j.last_seq in genuine
    top = max([s for s, _ in got] + [j.last_seq])
    mine = []
    for k in range(3):
        try:
            s = j.append(b"fuzz%d" % k)
        except StoreError:
            break
        assert top < s < SEQ_LIMIT
        top = s
        mine.append((s, b"fuzz%d" % k))
    if mine:
        again = list(Journal(f).records())
        assert again[-len(mine):] == mine
    return got


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(piece, max_size=14))
def test_adversarial_images(pieces):
    mem, genuine = build(pieces)
    exercise(mem, genuine)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(min_size=SIZE, max_size=SIZE))
def test_random_images_are_foreign(data):
    f = NorFlash(SIZE, sector_size=SS, page_size=256)
    f._mem[:] = data
    try:
        Journal(f)
        raise AssertionError("a random image mounted")
    except StoreError:
        assert f.read(0, SIZE) == data


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
