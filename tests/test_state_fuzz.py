"""Fuzz State with random, adversarial and mutated images (hypothesis).

Properties: mounting and using any image raises nothing but StoreError; mount reads a bounded number
of bytes (so it cannot hang); whatever is returned is either a value that was really put (mutated
real images) or an entry whose two CRCs the image itself attests (crafted images); a refused image is
never changed; the only header-less image adopted is a blank one or a cut first format.
The format constants are written out here from STATE.md, independently of the implementation.
"""
import binascii
import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from state_cases import RamDev
from umeter.store import StoreError
from umeter.store.state import State

SS = 512
LOG2 = 9
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def header(gen, erases=0, n=3, version=2, log2=LOG2, magic=b"UMST"):
    body = magic + struct.pack("<BBHII", version, log2, n, gen & 0xFFFFFFFF, erases & 0xFFFFFFFF)
    return body + struct.pack("<I", binascii.crc32(body))


def slot(typ, klen, vlen, d, dcrc):
    body = struct.pack("<BBHHHI", typ & 0xFF, klen & 0xFF, vlen & 0xFFFF, d & 0xFFFF, 0xFFFF, dcrc)
    return body + struct.pack("<I", binascii.crc32(body))


def mount_bound(n):
    # headers of every sector, the active one again, the active sector once; a blank check may read
    # the whole device.
    return 40 * (n + 1) + SS + n * SS


def use(dev, n):
    """Mount and exercise; returns the mounted State or None (StoreError). Anything else propagates."""
    dev.bytes_read = 0
    try:
        s = State(dev)
    except StoreError:
        assert dev.bytes_read <= mount_bound(n)
        return None
    assert dev.bytes_read <= mount_bound(n)
    return s


def attested(image, k, v):
    """True when some slot of the image carries a valid slot CRC and points at k+v with its data CRC."""
    data = k + v
    crc = binascii.crc32(data)
    for base in range(0, len(image), SS):
        for off in range(SS - 16, 39, -16):
            sl = bytes(image[base + off:base + off + 16])
            if binascii.crc32(sl[:12]) != struct.unpack("<I", sl[12:])[0]:
                continue
            typ, klen, vlen, d, _, dcrc = struct.unpack("<BBHHHI", sl[:12])
            if typ == 0x50 and dcrc == crc and klen == len(k) and vlen == len(v) \
                    and bytes(image[base + d:base + d + len(data)]) == data:
                return True
    return False


def exercise(s, extra_key=b"fz"):
    """Writes after mounting a strange image: only StoreError, and what returned must stick."""
    acked = {}
    for i, v in enumerate([b"", b"x" * 40, b"y" * 300]):
        k = extra_key + bytes([i])
        try:
            s.put(k, v)
            acked[k] = v
        except StoreError:
            pass
    try:
        s.compact()
    except StoreError:
        pass
    for k in s.keys():
        s.get(k)
    return acked


@FUZZ
@given(st.integers(2, 4).flatmap(
    lambda n: st.tuples(st.just(n), st.binary(min_size=n * SS, max_size=n * SS))))
def test_random_images(arg):
    n, img = arg
    dev = RamDev(bytearray(img), sector_size=SS)
    s = use(dev, n)
    if s is not None:               # only a blank image, or one holding a cut first format, is adopted
        first = header(1, 0, n) * 2
        assert all(b & f == f for b, f in zip(img, first)) and img[40:] == b"\xff" * (len(img) - 40)
        assert len(s) == 0


sector_kind = st.sampled_from(["valid"] * 4 + ["none", "a_only", "b_only", "disagree", "garbage"])
generation = st.sampled_from(list(range(1, 41)) + [0, 0x3FFFFFFF, 0x40000000, 0xFFFFFFFE, 0xFFFFFFFF])
plausible_slot = st.tuples(
    st.sampled_from([0x50, 0x50, 0x44]), st.integers(1, 32), st.integers(0, 120),
    st.none(), st.sampled_from([True, True, False]))       # data offset None: right after the previous entry
wild_slot = st.tuples(
    st.sampled_from([0x50, 0x44, 0x00, 0xFF, 0x51]), st.integers(0, 255), st.integers(0, 0xFFFF),
    st.one_of(st.integers(0, SS), st.integers(0, 0xFFFF)), st.booleans())


@FUZZ
@given(
    n=st.integers(2, 4),
    kinds=st.lists(sector_kind, min_size=4, max_size=4),
    gens=st.lists(generation, min_size=4, max_size=4),
    version=st.sampled_from([2] * 6 + [0, 1, 3, 255]),
    geometry=st.sampled_from([(LOG2, None)] * 6 + [(LOG2 + 1, None), (LOG2, 9)]),
    slots=st.lists(st.one_of(plausible_slot, plausible_slot, wild_slot), max_size=14),
    data=st.binary(min_size=SS, max_size=SS),
)
def test_crafted_images(n, kinds, gens, version, geometry, slots, data):
    img = bytearray(b"\xff" * (n * SS))
    log2, nfield = geometry
    best = None
    for s in range(n):
        h = header(gens[s], 5, nfield or n, version, log2)
        b = s * SS
        kind = kinds[s]
        if kind in ("valid", "a_only", "b_only") and (best is None or gens[s] > gens[best]):
            best = s        # where mount will look: put the crafted entries there
        if kind == "valid":
            img[b:b + 40] = h + h
        elif kind == "a_only":
            img[b:b + 20] = h
        elif kind == "b_only":
            img[b + 20:b + 40] = h
        elif kind == "disagree":
            img[b:b + 40] = h + header(gens[s] ^ 1, 5, nfield or n, version, log2)
        elif kind == "garbage":
            img[b:b + SS] = data
    target = best if best is not None else 0
    b = target * SS
    img[b + 40:b + SS] = data[40:]
    off = SS - 16
    nxt = 40
    for typ, klen, vlen, d, good in slots:
        if off < 40:
            break
        if d is None:
            d = nxt
        nxt = d + klen + vlen
        dd = bytes(img[b + d:b + d + klen + vlen]) if d + klen + vlen <= SS else b""
        crc = binascii.crc32(dd) if good else binascii.crc32(dd) ^ 0x5A5A
        img[b + off:b + off + 16] = slot(typ, klen, vlen, d, crc)
        off -= 16
    dev = RamDev(img, sector_size=SS)
    snapshot = bytes(img)
    s = use(dev, n)
    if s is None:
        assert bytes(dev.mem) == snapshot, "a refused image must not be touched"
        return
    for k, v in s.items():
        assert attested(snapshot, k, v), "returned an entry the image does not attest"
    acked = exercise(s)
    again = use(dev, n)
    assert again is not None
    for k, v in acked.items():
        assert again.get(k) == v


ops = st.lists(st.tuples(st.integers(0, 5), st.integers(0, 300), st.integers(0, 255)),
               min_size=1, max_size=40)
flips = st.lists(st.tuples(st.integers(0, 3 * SS - 1), st.integers(1, 255)), min_size=1, max_size=6)


@FUZZ
@given(ops=ops, flips=flips)
def test_mutated_real_images(ops, flips):
    dev = RamDev(bytearray(b"\xff" * (3 * SS)), sector_size=SS)
    s = State(dev)
    history = {}
    for ki, size, fill in ops:
        k = b"k%d" % ki
        if size % 7 == 0:
            s.delete(k)
            continue
        v = bytes([fill]) * min(size, s.max_value)
        try:
            s.put(k, v)
        except StoreError:
            continue
        history.setdefault(k, set()).add(v)
    for pos, x in flips:
        dev.mem[pos] ^= x
    m = use(dev, 3)
    if m is None:
        return
    for k, v in m.items():
        assert v in history.get(k, ()), "returned a value never written"
    exercise(m)


def test_generation_cannot_wrap():
    img = bytearray(b"\xff" * (2 * SS))
    img[0:40] = header(0x3FFFFFFF, n=2) * 2      # GEN_MAX: generations stay small ints on 32-bit
    dev = RamDev(img, sector_size=SS)
    s = State(dev)
    s.put(b"k", b"v")
    try:
        for i in range(100):                 # fills the sector: the compaction must refuse
            s.put(b"k", bytes([i]) * 100)
        raise AssertionError("no compaction was needed?")
    except StoreError as e:
        assert "exhausted" in str(e)
    assert State(dev).get(b"k") is not None and State(dev).stats()["generation"] == 0x3FFFFFFF


def test_equal_generations_refused():
    img = bytearray(b"\xff" * (2 * SS))
    img[0:40] = header(5, n=2) * 2
    img[SS:SS + 40] = header(5, n=2) * 2
    try:
        State(RamDev(img, sector_size=SS))
        raise AssertionError("mounted")
    except StoreError as e:
        assert "generation" in str(e)


@FUZZ
@given(n=st.integers(2, 4), extra=st.lists(st.integers(0, 255), min_size=40, max_size=40),
       spoil=st.one_of(st.none(), st.tuples(st.integers(0, 39), st.integers(0, 7))))
def test_cut_first_format_mounts_and_nothing_else_does(n, extra, spoil):
    """Bytes 0..39 of a blank device: the first-format header with any of its 0 bits still 1 (what a
    cut program leaves) mounts as the empty store and ends up exactly the header; clearing one bit the
    header keeps at 1 makes it foreign: refused, untouched."""
    first = header(1, 0, n) * 2
    torn = bytearray(h | m for h, m in zip(first, extra))
    if spoil is not None:
        i, bit = spoil
        if not first[i] >> bit & 1:
            return                       # that bit is 0 in the header: clearing it is still a tear
        torn[i] &= ~(1 << bit) & 0xFF
    img = bytearray(b"\xff" * (n * SS))
    img[:40] = torn
    dev = RamDev(img, sector_size=SS)
    snapshot = bytes(img)
    s = use(dev, n)
    if spoil is not None:
        assert s is None and bytes(dev.mem) == snapshot
        return
    assert s is not None and len(s) == 0 and bytes(dev.mem[:40]) == first
    s.put(b"k", b"v")
    assert State(dev).get(b"k") == b"v"
