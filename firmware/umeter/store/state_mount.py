"""State mount and recovery (STATE.md "Mount"): find the active sector, index its entries, and finish
a first format that a power cut interrupted. Everything is returned to the caller; nothing here keeps
state between calls."""
from .errors import StoreError
from .state_layout import (DATA0, HDR, HDRS, SLOT, T_PUT, decode_header, first_format_header,
                           could_be_torn_program, decode_copy, equal4, slot_is_free, slot_is_valid, u16)
from .state_crc import crc_reset, crc_update

VBITS = 11            # index value = (slot offset << VBITS) | value length: < 2**27, a small int
VMASK = 0x7FF


class Geometry:
    """Sector size, sector count, log2 of the sector size, largest value: fixed per device."""

    def __init__(self, ss, n, log2, vmax):
        self.ss = ss
        self.n = n
        self.log2 = log2
        self.vmax = vmax


class Survey:
    """What the sector headers say. active == -1: no header at all, and the device is blank or holds
    a cut first format (every other device with no header raises StoreError in survey())."""

    def __init__(self, active, gen, counts):
        self.active = active
        self.gen = gen
        self.counts = counts


class Sector:
    """The index of one sector's entries, as scan() found them."""

    def __init__(self, index, live, data_end, slot_ptr, corrupt):
        self.index = index          # key bytes -> (slot offset << VBITS) | value length
        self.live = live            # sum of (SLOT + key + value) over live keys
        self.data_end = data_end    # next free data byte
        self.slot_ptr = slot_ptr    # lowest used slot (ss when none)
        self.corrupt = corrupt      # slots or entries that failed a check


def survey(flash, geo, hb, acc):
    """Read both header copies of every sector. Never writes."""
    ss, n = geo.ss, geo.n
    best = -1
    best_gen = 0
    tie = False
    counts = [None] * n
    for s in range(n):
        flash.read_into(s * ss, hb)
        h = decode_header(hb, geo.log2, n, acc)
        if h is None:
            continue
        gen, erases = h
        counts[s] = erases
        if gen > best_gen:
            best, best_gen, tie = s, gen, False
        elif gen == best_gen:
            tie = True
    if best < 0:
        if not blank_or_torn_first_format(flash, geo, hb, acc):
            raise StoreError("not a State store (no State header, and not blank): left untouched")
        return Survey(-1, 0, [0] * n)
    if tie:
        raise StoreError("two sectors claim generation %d" % best_gen)
    # A sector whose header is gone (torn erase, never used) is taken as worn as the active one.
    guess = counts[best]
    return Survey(best, best_gen, [guess if c is None else c for c in counts])


def blank_or_torn_first_format(flash, geo, hb, acc):
    """True when the device is all 0xFF except sector 0's header area, and that area holds a part of
    the first-format header and nothing else (the only thing a cut first format can leave)."""
    first_format_header(hb, geo.log2, geo.n, acc)
    seen = bytearray(HDRS)
    flash.read_into(0, seen)
    if not could_be_torn_program(seen, hb):
        return False
    return flash.is_blank(HDRS, flash.size - HDRS)


def finish_header(flash, geo, base, hb, acc):
    """Read the active sector's header. When one copy is a State header and the other is not the same
    but is a part of it (each byte the valid copy's with some 0 bits not yet cleared: a cut between or
    during the two programs), program the other copy again: that only clears bits the valid copy
    clears, so a cut here is harmless. Returns the damaged copies counted in corrupt_skipped: 1 when
    copy A is not a State header (a cut never leaves one beside a complete copy B), else 0 or, for a
    copy B no cut explains, 1."""
    flash.read_into(base, hb)
    a = memoryview(hb)[:HDR]
    b = memoryview(hb)[HDR:HDRS]
    if a == b:
        return 0
    if decode_copy(hb, 0, geo.log2, geo.n, acc) is None:
        if could_be_torn_program(a, b):
            flash.program(base, bytes(b))
        return 1
    if could_be_torn_program(b, a):
        flash.program(base + HDR, bytes(a))
        return 0
    return 1


def write_first_format(flash, geo, hb, acc):
    """Program the first-format header (copy A, check, copy B) over a blank or cut-first-format sector
    0. Programming the same bits again only finishes a cut program, so a cut here is harmless too."""
    first_format_header(hb, geo.log2, geo.n, acc)
    if not program_header(flash, 0, hb):
        raise StoreError("cannot format: sector 0 does not program (flash worn out)")


def program_header(flash, base, hb):
    """Program copy A, read it back, then copy B; True when copy A is intact (the commit point)."""
    a = memoryview(hb)[:HDR]
    flash.program(base, a)
    back = bytearray(HDR)
    flash.read_into(base, back)
    if back != a:
        return False
    flash.program(base + HDR, memoryview(hb)[HDR:HDRS])
    return True


def scan(flash, geo, base, sb, acc):
    """Index the sector at base: slots oldest (sector end) to newest, each checked by two CRCs."""
    ss = geo.ss
    index = {}
    live = 0
    corrupt = 0
    data_end = DATA0
    slot = ss - SLOT
    dcrc = bytearray(4)
    while slot >= data_end:
        flash.read_into(base + slot, sb)
        if slot_is_free(sb):
            break
        cur = slot
        slot -= SLOT
        if not slot_is_valid(sb, cur, geo.vmax, acc):
            corrupt += 1
            continue
        typ, klen, vlen, d = sb[0], sb[1], u16(sb, 2), u16(sb, 4)
        if d < data_end:            # overlaps an older entry: not written by State
            corrupt += 1
            continue
        data_end = d + klen + vlen
        key = flash.read(base + d, klen)
        if type(key) is not bytes:
            key = bytes(key)
        crc_reset(dcrc)
        crc_update(dcrc, key, klen)
        flash.crc_range(base + d + klen, vlen, dcrc)
        if not equal4(dcrc, sb, 8):
            corrupt += 1
            continue
        old = index.get(key)
        if old is not None:
            live -= SLOT + klen + (old & VMASK)
        if typ == T_PUT:
            index[key] = (cur << VBITS) | vlen
            live += SLOT + klen + vlen
        elif old is not None:
            del index[key]
    slot_ptr = slot + SLOT
    # Anything programmed between the data and the slots (a put cut before its slot) is never
    # programmed over: the free space starts after its last programmed byte.
    last = flash.last_programmed(base + data_end, max(0, slot_ptr - data_end))
    if last >= 0:
        data_end += last + 1
    return Sector(index, live, data_end, slot_ptr, corrupt)
