"""State checks shared by the CPython (test_state.py) and MicroPython (mpt_state.py) suites."""
import binascii

from mptest import raises
from sim.nor import NorFlash, PowerCut
from harness import state_torture
from harness.state_torture import Rng
from umeter.store import StoreError
from umeter.store.region import Region
from umeter.store.state import MAX_KEY, State, StateFull


class RamDev:
    """NOR semantics over a bytearray image, allocation-free reads, and a count of bytes read.
    Lets a test flip any bit of the image (the simulator only clears bits)."""

    def __init__(self, image, sector_size=4096, page_size=256):
        self.mem = image
        self.size = len(image)
        self.sector_size = sector_size
        self.page_size = page_size
        self.bytes_read = 0

    def read(self, addr, n):
        assert 0 <= addr and addr + n <= self.size
        self.bytes_read += n
        return bytes(memoryview(self.mem)[addr:addr + n])     # one copy: the returned value

    def readinto(self, addr, buf):
        n = len(buf)
        assert 0 <= addr and addr + n <= self.size
        self.bytes_read += n
        mem = self.mem
        for i in range(n):
            buf[i] = mem[addr + i]

    def program(self, addr, data):
        n = len(data)
        assert 0 <= addr and addr + n <= self.size
        assert addr // self.page_size == (addr + n - 1) // self.page_size, "crosses a page"
        mem = self.mem
        for i in range(n):
            mem[addr + i] &= data[i]

    def erase_sector(self, addr):
        assert addr % self.sector_size == 0
        self.mem[addr:addr + self.sector_size] = b"\xff" * self.sector_size


def clone(flash):
    """A fresh simulator holding the same image (programming a blank chip copies it exactly)."""
    f = NorFlash(flash.size, sector_size=flash.sector_size, page_size=flash.page_size, seed=7)
    page = flash.page_size
    ff = b"\xff" * page
    for a in range(0, flash.size, page):
        d = flash.read(a, page)
        if d != ff:
            f.program(a, d)
    return f


def fill(st, rng, nputs, keys=12, history=None):
    """Random puts and deletes; returns the model {key: value} of what should be live."""
    model = {}
    for i in range(nputs):
        k = b"key%d" % rng.below(keys)
        if rng.below(8) == 0:
            st.delete(k)
            model.pop(k, None)
            continue
        v = rng.fill(rng.below(120))
        st.put(k, v)
        model[k] = v
        if history is not None:
            history.setdefault(k, set()).add(binascii.crc32(v))
    return model


def check_blank_formats_and_roundtrips():
    f = NorFlash(4 * 4096)
    st = State(f)
    assert len(st) == 0 and st.get(b"nope") is None and st.get("nope", 5) == 5
    st.put("volts", b"230")
    st.put(b"\x00\xffbin", b"")
    st.put(b"x" * MAX_KEY, b"\x00" * st.max_value)
    assert st.get(b"volts") == b"230"           # str and bytes name the same key
    assert st.get("volts") == b"230"
    assert st.get(b"\x00\xffbin") == b""
    assert st.get(b"x" * MAX_KEY) == b"\x00" * st.max_value
    assert "volts" in st and b"missing" not in st
    st.put("volts", bytearray(b"231"))
    assert st.delete(b"\x00\xffbin") is True
    assert st.delete(b"never") is False
    again = State(f)
    assert sorted(again.keys()) == sorted([b"volts", b"x" * MAX_KEY])
    assert dict(again.items()) == {b"volts": b"231", b"x" * MAX_KEY: b"\x00" * st.max_value}
    assert again.get(b"\x00\xffbin") is None
    s = again.stats()
    assert s["keys"] == 2 and s["corrupt_skipped"] == 0 and s["generation"] == 1


def check_limits():
    st = State(NorFlash(2 * 4096))
    assert st.max_value == 1024 and st.max_key == 32
    with raises(ValueError):
        st.put(b"", b"v")
    with raises(ValueError):
        st.put(b"k" * 33, b"v")
    with raises(ValueError):
        st.put(b"k", b"v" * 1025)
    with raises(TypeError):
        st.put(b"k", "text")
    with raises(TypeError):
        st.put(12, b"v")
    with raises(ValueError):
        State(NorFlash(4096))                  # one sector is not enough
    assert len(st) == 0


def check_compaction_keeps_latest_and_spreads_wear():
    f = NorFlash(4 * 4096)
    st = State(f)
    rng = Rng(5)
    model = fill(st, rng, 900)
    s = st.stats()
    assert s["compactions"] >= 12 and s["keys"] == len(model)
    for k, v in model.items():
        assert st.get(k) == v
    st.compact()
    s2 = st.stats()
    assert s2["compactions"] == s["compactions"] + 1 and s2["live_bytes"] == s["live_bytes"]
    assert s2["used_bytes"] == 40 + s2["live_bytes"]     # only live entries copied
    again = State(f)
    assert {k: again.get(k) for k in again.keys()} == model
    counts = f.stats()["erase_counts"]
    assert max(counts) - min(counts) <= 1                 # plain rotation
    assert again.stats()["erase_counts"] == counts        # persisted in the sector headers


def check_full_is_refused_cleanly():
    st = State(NorFlash(2 * 4096))
    for i in range(3):
        st.put(b"big%d" % i, bytes([i]) * 1024)
    with raises(StateFull):
        st.put(b"big3", b"\x03" * 1024)
    with raises(StoreError):                  # StateFull is a StoreError
        st.put(b"big3", b"\x03" * 1024)
    st.put(b"big0", b"\x07" * 1024)           # replacing an entry needs no extra room
    assert sorted(st.keys()) == [b"big0", b"big1", b"big2"]
    assert st.get(b"big0") == b"\x07" * 1024


def check_foreign_device_refused_and_untouched():
    f = NorFlash(4 * 4096)
    f.program(5000, b"not a state store")
    before = [f.read(a, 4096) for a in range(0, f.size, 4096)]
    with raises(StoreError, "not a State"):
        State(f)
    assert [f.read(a, 4096) for a in range(0, f.size, 4096)] == before
    st = State.format(f)
    assert len(st) == 0 and f.read(5000, 4) == b"\xff" * 4


def check_geometry_mismatch_refused():
    f = NorFlash(8 * 4096)
    State(Region(f, 0, 4 * 4096)).put(b"k", b"v")
    with raises(StoreError, "geometry"):
        State(Region(f, 0, 6 * 4096))


def check_mount_cost_bounded():
    f = NorFlash(64 * 4096)
    st = State(f)
    fill(st, Rng(3), 200)
    f.reset_stats()
    again = State(f)
    bound = 40 * (64 + 1) + 4096            # every header, the active one again, the active sector
    assert again.stats()["mount_bytes_read"] == f.stats()["bytes_read"] <= bound


def check_get_into():
    st = State(NorFlash(2 * 4096))
    st.put(b"reg", b"\x01\x02\x03\x04")
    buf = bytearray(4)
    assert st.get_into(b"reg", buf) == 4 and buf == b"\x01\x02\x03\x04"
    big = bytearray(10)
    assert st.get_into(b"reg", big) == 4 and big[:4] == b"\x01\x02\x03\x04"
    assert st.get_into(b"none", buf) == -1
    with raises(ValueError):
        st.get_into(b"reg", bytearray(3))


def check_torn_put_leaves_no_hole():
    """A put torn in its data: the sector's free space starts after the torn bytes on remount."""
    for seed in range(12):
        f = NorFlash(2 * 4096, seed=seed)
        st = State(f)
        st.put(b"a", b"A" * 10)
        free0 = st.stats()["free_bytes"]
        f.arm_cut(2)                  # first program (key) completes, the value is torn
        try:
            st.put(b"b", b"B" * 200)
            raise AssertionError("no cut")
        except PowerCut:
            pass
        f.power_on()
        again = State(f)
        assert again.get(b"a") == b"A" * 10 and again.get(b"b") is None
        assert again.stats()["free_bytes"] <= free0 - 1       # the key bytes at least are skipped
        again.put(b"c", b"C" * 100)
        assert State(f).get(b"c") == b"C" * 100


def check_runtime_corruption_skipped(dev_factory):
    dev = dev_factory(2)
    st = State(dev)
    st.put(b"a", b"alpha" * 10)
    st.put(b"b", b"beta" * 10)
    i = dev.mem.find(b"alphaalpha")
    dev.mem[i + 3] ^= 0x10
    assert st.get(b"a") is None and st.get(b"a", b"dflt") == b"dflt"
    assert st.stats()["corrupt_skipped"] == 2
    assert dict(st.items()) == {b"b": b"beta" * 10}
    st.compact()                                 # the corrupt entry is not carried over
    assert st.keys() == [b"b"]
    again = State(dev)
    assert again.keys() == [b"b"] and again.stats()["corrupt_skipped"] == 0


def check_header_copy_flip_survives(dev_factory):
    dev = dev_factory(3)
    st = State(dev)
    st.put(b"k", b"v1")
    st.compact()
    st.put(b"k", b"v2")
    act = st.stats()["active_sector"]
    dev.mem[act * 4096 + 9] ^= 0x01                    # generation byte of copy A
    again = State(dev)
    assert again.get(b"k") == b"v2" and again.stats()["corrupt_skipped"] == 1
    assert again.stats()["active_sector"] == act


def check_bit_flips(dev_factory, rounds):
    """Flip one random bit of a used store: mount succeeds, values are ones that were written."""
    rng = Rng(11)
    flagged = 0
    for r in range(rounds):
        dev = dev_factory(3)
        st = State(dev)
        history = {}
        model = fill(st, rng, 30 + rng.below(300), history=history)
        base = st.stats()["active_sector"] * 4096
        if rng.below(4) == 0:
            pos = rng.below(dev.size)                  # anywhere, even free or stale sectors
        else:
            pos = base + rng.below(4096)               # a programmed byte of the active sector
            while dev.mem[pos] == 0xFF:
                pos = base + rng.below(4096)
        dev.mem[pos] ^= 1 << rng.below(8)
        again = State(dev)
        changed = False
        for k in history:
            got = again.get(k)
            if got is not None:
                assert binascii.crc32(got) in history[k], "returned a value never written"
            if got != model.get(k):
                changed = True
        for k in again.keys():
            assert k in history
        if changed:
            assert again.stats()["corrupt_skipped"] >= 1
            flagged += 1
        again.put(b"after", b"flip")                  # and the store keeps working
        assert State(dev).get(b"after") == b"flip"
    return flagged


def check_format_cut_never_resurrects():
    """State.format of a used store, cut at every program/erase it makes: the next mount shows the
    old store or the empty one; never an older generation, never a refusal."""
    base = NorFlash(3 * 4096, seed=1)
    st = State(base)
    model = fill(st, Rng(8), 400)
    assert st.stats()["generation"] > 3                 # older, still-valid sectors exist
    outcomes = {"old": 0, "new": 0}
    k = 0
    while True:
        k += 1
        f = clone(base)
        f.arm_cut(k)
        try:
            State.format(f)
            f.disarm_cut()
            break                                       # k passed the last operation of format
        except PowerCut:
            f.power_on()
        st2 = State(f)                                  # never StoreError
        if len(st2) == 0:
            outcomes["new"] += 1
        else:
            assert {k2: st2.get(k2) for k2 in st2.keys()} == model, "stale generation came back"
            outcomes["old"] += 1
    assert outcomes["old"] and outcomes["new"]
    done = State(f)
    assert len(done) == 0 and f.read(4096 * ((done.stats()["active_sector"] + 1) % 3), 4096) == b"\xff" * 4096
    return outcomes


def check_worn_sector_skipped():
    """A sector past its endurance fails its erase check: compaction moves on, values stay right."""
    f = NorFlash(4 * 4096, seed=4, endurance=15)
    st = State(f)
    rng = Rng(9)
    model = {}
    inflight = None
    try:
        for i in range(4000):
            k = b"w%d" % rng.below(10)
            v = rng.fill(rng.below(300))
            inflight = (k, v)
            st.put(k, v)
            model[k] = v
        inflight = None
    except StoreError as e:
        assert "worn" in str(e)
    s = st.stats()
    assert s["bad_sectors"] >= 1 and s["compactions"] > 40
    for k in st.keys():
        if inflight is not None and k == inflight[0]:
            assert st.get(k) in (model.get(k), inflight[1])
        else:
            assert st.get(k) == model[k]
    assert len(st) >= len(model) - 1


def check_on_spi_nor_driver():
    """The real driver (umeter.hal.spi_nor over the SPI-level simulator), through a partition Region."""
    from sim.spi import SpiNorSim
    from umeter.hal.spi_nor import SpiNor

    sim = SpiNorSim("W25Q16JV")

    def attach():
        return Region(SpiNor(sim.spi, sim.cs, sleep_us=sim.sleep_us, ticks_us=sim.ticks_us),
                      1024 * 1024, 4 * 4096)

    st = State(attach())
    model = fill(st, Rng(12), 150)
    assert st.stats()["compactions"] >= 2
    again = State(attach())
    assert {k: again.get(k) for k in again.keys()} == model
    # Nothing outside the partition was touched.
    assert sim.flash.read(1024 * 1024 - 4096, 4096) == b"\xff" * 4096
    assert sim.flash.read(1024 * 1024 + 4 * 4096, 4096) == b"\xff" * 4096


# --- revision 2: first format, foreign regions, allocation, cut sweeps -----------------------------
def _first_format_bytes(n, log2=12):
    from umeter.store.state_layout import HDRS, first_format_header

    hb = bytearray(HDRS)
    first_format_header(hb, log2, n, bytearray(4))
    return bytes(hb)


def _guarded(sectors=2, seed=0):
    """A flash with one guard sector on each side of a State region (guards must stay erased)."""
    f = NorFlash((sectors + 2) * 4096, seed=seed)
    return f, Region(f, 4096, sectors * 4096)


def _guards_erased(f):
    return f.read(0, 4096) == b"\xff" * 4096 and f.read(f.size - 4096, 4096) == b"\xff" * 4096


def check_first_format_cut_mounts():
    """State(dev) on a blank device formats it (two programs: header copies A and B). A cut at either
    program, with many tear patterns, and again during the mount that finishes it: the next mount
    gives an empty, working store. Also every byte-wise tear of the 40 header bytes, made by hand."""
    torn_nonblank = 0
    for seed in range(24):
        for k in (1, 2):
            f, dev = _guarded(2, seed)
            f.arm_cut(k)
            with raises(PowerCut):
                State(dev)
            f.power_on()
            if f.read(4096, 40) != b"\xff" * 40 and k == 1:
                torn_nonblank += 1
            if seed % 2:                       # cut the mount that finishes the format, too
                f.arm_cut(1)
                try:
                    State(dev)
                    f.disarm_cut()
                except PowerCut:
                    f.power_on()
            st = State(dev)
            assert len(st) == 0 and st.stats()["generation"] == 1
            st.put(b"boots", b"\x01")
            assert State(dev).get(b"boots") == b"\x01" and _guards_erased(f)
    assert torn_nonblank >= 12                 # the cuts really left torn header bytes behind
    first = _first_format_bytes(2)
    for i in range(len(first)):
        f, dev = _guarded(2)
        part = bytearray(first[:i + 1])
        cleared = ~first[i] & 0xFF
        part[i] = 0xFF & ~(cleared & 0x5A)     # byte i: only some of its zero bits programmed
        dev.program(0, bytes(part))
        st = State(dev)
        assert len(st) == 0 and f.read(4096, 40) == first, i
    return torn_nonblank


def _revision1_header(gen=3, n=2):
    body = b"UMST" + bytes([1, 12, n & 0xFF, n >> 8]) + bytes([gen, 0, 0, 0]) + bytes(4)
    c = binascii.crc32(body)
    return body + bytes([c & 0xFF, (c >> 8) & 0xFF, (c >> 16) & 0xFF, (c >> 24) & 0xFF])


def check_foreign_regions_refused_untouched():
    """Images that are not State revision 2: mount raises StoreError and changes no byte (guard
    sectors included); State.format then takes them over."""
    first = _first_format_bytes(2)
    images = [
        ("zeroed superblock", 0, bytes(16)),
        ("text in the data area", 1000, b"not a state store"),
        ("littlefs-like superblock", 0, b"\x03\x00\x00\x00\xf0\x0f\xff\xf7littlefs"),
        ("data in the last sector only", 4096 + 3000, b"\x00\x01\x02\x03"),
        ("revision-1 State header", 0, _revision1_header() * 2),
        ("a tear of our first header, and more", 0, first[:10] + b"\xff" * 30 + b"\x00"),
        ("one byte not a tear of our header", 0, bytes([first[0] & 0xFB])),
    ]
    for name, addr, data in images:
        f, dev = _guarded(2)
        dev.program(addr, data)
        before = f.read(0, f.size)
        try:
            State(dev)
            raise AssertionError("%s: mounted" % name)
        except StoreError as e:
            if name.startswith("revision-1"):
                assert "revision 1" in str(e), str(e)
        assert f.read(0, f.size) == before, "%s: the image was changed" % name
        st = State.format(dev)
        assert len(st) == 0 and _guards_erased(f)
        st.put(b"k", b"v")
        assert State(dev).get(b"k") == b"v"


def check_get_into_allocation_free(heap_lock, heap_unlock):
    """get_into with a buffer of the value's length allocates nothing (heap_lock), hits and misses,
    and after a compaction; values whose CRCs are >= 2**30 included (most are)."""
    st = State(RamDev(bytearray(b"\xff" * (2 * 4096))))
    values = [bytes([i]) * 48 for i in range(8)]
    for i, v in enumerate(values):
        st.put(b"reg%d" % i, v)
    st.compact()
    buf = bytearray(48)
    keys = [b"reg%d" % i for i in range(8)]
    high = [binascii.crc32(keys[i] + values[i]) >= (1 << 30) for i in range(8)]
    assert True in high                        # big ints on 32-bit, had the CRC been an int
    st.get_into(keys[0], buf)                  # warm up
    ok = 0
    heap_lock()
    try:
        for i in range(8):
            if st.get_into(keys[i], buf) == 48 and buf == values[i]:
                ok += 1
        missing = st.get_into(b"none", buf)
    finally:
        heap_unlock()
    assert missing == -1 and ok == 8


def _values_by_crc(key, n):
    """Two n-byte values: the CRC of key + value below 2**30 for the first, at or above for the
    second (on 32-bit ports only the second would be a heap int)."""
    low = high = None
    for i in range(256):
        v = bytes([i]) * n
        if binascii.crc32(key + v) < (1 << 30):
            low = low or v
        else:
            high = high or v
        if low and high:
            return low, high
    raise AssertionError("no values found")


def check_put_allocation_bound(alloc):
    """A put allocates only memoryviews (one per page piece of its data, one for the read-back tail,
    one per split), never a copy of the value and never an int object: the same bound, counted in
    memoryviews, on every lane; and exactly the same bytes whether the entry's CRC is a small int or
    not. `alloc(f)` returns the bytes f() allocated. Returns the figures."""
    data = b"x" * 1024
    view_size = alloc(lambda: memoryview(data))
    figures = {"view_bytes": view_size}
    for n in (8, 48, 300, 1000):
        used = []
        for v in _values_by_crc(b"big", n):
            dev = RamDev(bytearray(b"\xff" * (3 * 4096)))
            st = State(dev)
            st.put(b"other", b"o" * 100)
            st.put(b"big", v)            # warm up the key's index entry
            used.append(alloc(lambda: st.put(b"big", v)))
            assert State(dev).get(b"big") == v
        pages = 1 + (n + 3 + 255) // 256       # key + value span at most this many pages
        assert used[0] == used[1], (n, used)   # a CRC >= 2**30 costs nothing more
        assert used[0] <= (pages + 2) * view_size, (n, used, view_size)
        figures[n] = used[0]
    return figures


def check_power_cut_sweep(configs):
    """The exhaustive sweep (harness/state_torture.sweep) over each (sectors, sector_size, second)."""
    total = 0
    for sectors, ss, second in configs:
        r = state_torture.sweep(sectors=sectors, sector_size=ss, second=second)
        assert r["lost"] == 0 and r["corrupt"] == 0 and r["failed_at"] is None and not r["uncut_runs"], r
        assert r["runs"] == r["ops"] * (second + 1) and r["first_format_cuts"] >= 2 * (second + 1), r
        assert r["guards_blank"], r
        if second:
            assert r["cuts"] > r["runs"] and r["cuts_in_mount"] > r["first_format_cuts"], r
        total += r["cuts"]
    return total


def check_cut_copy_b_finished(dev_factory):
    """A compaction cut between header copies A and B: mount programs copy B again and counts no
    damage. A copy B no cut explains (a bit cleared that copy A keeps) is counted and left alone."""
    dev = dev_factory(3)
    st = State(dev)
    st.put(b"k", b"v1")
    st.compact()
    base = st.stats()["active_sector"] * 4096
    a = bytes(dev.mem[base:base + 20])
    dev.mem[base + 20:base + 40] = b"\xff" * 10 + a[10:]        # copy B: its first 10 bytes not programmed
    again = State(dev)
    assert again.get(b"k") == b"v1" and again.stats()["corrupt_skipped"] == 0
    assert bytes(dev.mem[base + 20:base + 40]) == a
    dev.mem[base + 20] = a[0] & 0xFE if a[0] & 1 else a[0] & 0xFD   # no tear of copy A
    spoiled = bytes(dev.mem[base + 20:base + 40])
    third = State(dev)
    assert third.get(b"k") == b"v1" and third.stats()["corrupt_skipped"] == 1
    assert bytes(dev.mem[base + 20:base + 40]) == spoiled


class _SilentProgramFailures:
    """A chip whose programs stop taking (nothing changes, no error) once `fail` is set; erases work."""

    def __init__(self, flash):
        self.flash = flash
        self.size, self.sector_size, self.page_size = flash.size, flash.sector_size, flash.page_size
        self.fail = False

    def read(self, addr, n):
        return self.flash.read(addr, n)

    def readinto(self, addr, buf):
        self.flash.readinto(addr, buf)

    def program(self, addr, data):
        if not self.fail:
            self.flash.program(addr, data)

    def erase_sector(self, addr):
        self.flash.erase_sector(addr)


def check_silent_program_failures_keep_acknowledged_values():
    """Programs that fail silently: the put raises StoreError ("worn out") after trying each other
    sector once, the active sector is never erased, and every acknowledged value reads back after a
    remount on a healthy chip."""
    flash = NorFlash(3 * 4096)
    dev = _SilentProgramFailures(flash)
    st = State(dev)
    model = fill(st, Rng(4), 120)
    act = st.stats()["active_sector"]
    erases = flash.stats()["erase_counts"][act]
    dev.fail = True
    with raises(StoreError, "worn out"):
        st.put(b"key1", b"never stored")
    assert flash.stats()["erase_counts"][act] == erases       # the sector holding the values
    assert st.stats()["bad_sectors"] == 2
    again = State(dev)
    assert {k: again.get(k) for k in again.keys()} == model


def check_crc_matches_binascii():
    """state_crc.crc_update (viper on MicroPython) gives binascii.crc32's bytes, chained in pieces."""
    from umeter.store.state_crc import crc_reset, crc_update, crc_update_plain

    rng = Rng(17)
    acc = bytearray(4)
    ref = bytearray(4)
    for n in (0, 1, 2, 15, 16, 255, 256, 1000):
        data = rng.fill(n)
        cut = rng.below(n + 1)
        crc_reset(acc)
        crc_update(acc, data, cut)
        crc_update(acc, memoryview(data)[cut:], n - cut)
        crc_reset(ref)
        crc_update_plain(ref, data, n)
        c = binascii.crc32(data)
        assert acc == ref == bytes([c & 0xFF, (c >> 8) & 0xFF, (c >> 16) & 0xFF, (c >> 24) & 0xFF]), n


def check_brownout_loop():
    """Brown-out loop: power fails again and again during the first put after each mount (and now and
    then during the mount itself). The other keys never change and the key being put reads as its last
    acknowledged value or one of the attempts. Once the sector is full, every put needs a compaction
    (an erase, the copies, the header: about a dozen operations), and a loop that cuts within three
    never lets one finish: nothing is lost, and the first boot that stays up long enough (every tenth
    here) reclaims the torn space."""
    f, dev = _guarded(2, seed=3)
    st = State(dev)
    model = fill(st, Rng(6), 40, keys=6)
    attempts = set()
    current = model.get(b"key0")
    compactions = st.stats()["compactions"]
    for i in range(90):
        v = bytes([i]) * (20 + i % 50)
        attempts.add(v)
        f.arm_cut(40 if i % 10 == 9 else 1 + i % 3)
        try:
            st.put(b"key0", v)
            f.disarm_cut()
            current = v
        except PowerCut:
            f.power_on()
        if i % 4 == 3:
            f.arm_cut(1)                       # and cut the next mount, if it writes at all
        try:
            st = State(dev)
            f.disarm_cut()
        except PowerCut:
            f.power_on()
            st = State(dev)
        got = st.get(b"key0")
        assert got == current or got in attempts, i
        current = got
        for k, v0 in model.items():
            if k != b"key0":
                assert st.get(k) == v0, (i, k)
    assert st.stats()["compactions"] > compactions      # torn space was reclaimed
    st.put(b"key0", b"final")
    assert State(dev).get(b"key0") == b"final" and _guards_erased(f)
