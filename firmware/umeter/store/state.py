"""State: a power-safe key -> latest value store on NOR flash (format and protocol: STATE.md).

    s = State(dev)              # mounts; formats a blank device (or finishes a cut first format);
                                # StoreError on anything else, which is left untouched
    s.put(b"cfg", b"...")       # atomic and durable once it returns
    s.get(b"cfg", default)      # latest value (bytes) or default
    s.get_into(b"cfg", buf)     # into a caller buffer: the length, or -1; allocation-free
    s.delete(b"cfg")            # durable tombstone; True if the key existed
    s.keys(), s.items()         # live keys (as bytes) / (key, value) pairs
    s.compact()                 # also automatic when the active sector is full
    State.format(dev)           # the only way to wipe a device

One sector is active at a time: entry data grows up from its header, fixed-size slots grow down from
its end, and a put is visible once its slot is programmed. Compaction copies the live entries into the
next sector of the rotation and commits it by writing its header last, with a higher generation.
The modules: state_layout (bytes on flash), state_crc (CRC-32 in a buffer), state_flash (device
access), state_mount (mount and recovery); this one reads, writes and compacts.
"""
from .errors import StoreError
from .state_crc import crc_reset, crc_update
from .state_flash import Flash
from .state_layout import (DATA0, GEN_MAX, HDRS, MAX_KEY, SLOT, T_DEL, T_PUT, VERSION,
                           encode_header, encode_slot, equal4, geometry, max_value, slot_is_valid, u16)
from .state_mount import (VBITS, VMASK, Geometry, Sector, finish_header, program_header, scan, survey,
                          write_first_format)

__all__ = ("State", "StateFull", "MAX_KEY", "VERSION", "StoreError")


class StateFull(StoreError):
    """The live entries plus the new one would not fit in one sector: nothing was written."""


def _key_bytes(key):
    if type(key) is bytes:              # the allocation-free path
        if not 0 < len(key) <= MAX_KEY:
            raise ValueError("key must be 1..%d bytes" % MAX_KEY)
        return key
    if isinstance(key, str):
        key = key.encode()
    elif isinstance(key, bytearray) or isinstance(key, memoryview):
        key = bytes(key)
    elif not isinstance(key, bytes):
        raise TypeError("key must be str or bytes")
    if not 0 < len(key) <= MAX_KEY:
        raise ValueError("key must be 1..%d bytes" % MAX_KEY)
    return key


class State:
    def __init__(self, dev):
        ss, n, log2 = geometry(dev)
        self._geo = geo = Geometry(ss, n, log2, max_value(ss))
        self._flash = flash = Flash(dev)
        self.dev = dev                   # the device (region) mounted, as Journal.dev
        self._dev = dev                  # the same, by the name meterctl export reaches it under
        self.max_key = MAX_KEY
        self.max_value = geo.vmax
        self.capacity = ss - DATA0       # bytes of live entries (16 + key + value each) that fit
        # Preallocated buffers: get/get_into/put never allocate these again.
        self._sb = bytearray(SLOT)       # a slot read from flash
        self._sb_out = bytearray(SLOT)   # a slot being written
        self._sb_back = bytearray(SLOT)  # its read-back
        self._hb = bytearray(HDRS)
        self._acc = bytearray(4)         # CRC being checked
        self._dcrc = bytearray(4)        # CRC of the entry being written
        self._corrupt = 0
        self._session_compactions = 0
        self._session_erases = 0
        self._bad = 0
        sv = survey(flash, geo, self._hb, self._acc)
        if sv.active < 0:
            write_first_format(flash, geo, self._hb, self._acc)
            self._adopt(0, 1, Sector({}, 0, DATA0, ss, 0))
        else:
            base = sv.active * ss
            damaged = finish_header(flash, geo, base, self._hb, self._acc)
            sector = scan(flash, geo, base, self._sb, self._acc)
            self._corrupt = damaged + sector.corrupt
            self._adopt(sv.active, sv.gen, sector)
        self._counts = sv.counts
        self._mount_read = flash.bytes_read

    def _adopt(self, s, gen, sector):
        """Make sector s (generation gen, indexed as `sector`) the active one."""
        self._act = s
        self._gen = gen
        self._base = s * self._geo.ss
        self._index = sector.index
        self._live = sector.live
        self._data_end = sector.data_end
        self._slot_ptr = sector.slot_ptr

    # --- formatting ---------------------------------------------------------------------------------
    @classmethod
    def format(cls, dev):
        """Wipe dev and return it mounted and empty. On a State store of this revision the switch is
        one compaction commit (a cut leaves the old or the empty store); see STATE.md "Format"."""
        ss, n, log2 = geometry(dev)
        geo = Geometry(ss, n, log2, max_value(ss))
        flash = Flash(dev)
        hb = bytearray(HDRS)
        acc = bytearray(4)
        try:
            sv = survey(flash, geo, hb, acc)
        except StoreError:
            sv = None                    # foreign, other revision or geometry: erased below
        if sv is not None and sv.active >= 0:
            st = cls(dev)
            st._compact(None, 0, None, False)         # the commit: an empty generation
            for s in range(n):
                if s != st._act:
                    flash.erase(s * ss)               # stale values go; a cut here changes nothing
            return cls(dev)
        if sv is None:
            for s in range(n - 1, -1, -1):
                flash.erase(s * ss)
        write_first_format(flash, geo, hb, acc)
        return cls(dev)

    # --- reading ------------------------------------------------------------------------------------
    def get(self, key, default=None):
        kb = _key_bytes(key)
        p = self._index.get(kb)
        if p is None:
            return default
        sb = self._sb
        d = self._read_slot(kb, p, sb)
        if d < 0:
            return default
        vlen = p & VMASK
        v = self._flash.read(self._base + d + len(kb), vlen)
        if not self._data_matches(kb, v, vlen, sb):
            return default
        return v

    def get_into(self, key, buf):
        """Read the value into buf (len(buf) >= value length); returns the length, or -1 if absent.
        Allocation-free when len(buf) equals the value length."""
        kb = _key_bytes(key)
        p = self._index.get(kb)
        if p is None:
            return -1
        vlen = p & VMASK
        if len(buf) < vlen:
            raise ValueError("buffer smaller than the %d-byte value" % vlen)
        sb = self._sb
        d = self._read_slot(kb, p, sb)
        if d < 0:
            return -1
        view = buf if len(buf) == vlen else memoryview(buf)[:vlen]
        self._flash.read_into(self._base + d + len(kb), view)
        if not self._data_matches(kb, view, vlen, sb):
            return -1
        return vlen

    def _read_slot(self, kb, p, sb):
        """Read the slot of an indexed entry into sb and check it; its data offset, or -1 (counted)."""
        slot_off = p >> VBITS
        self._flash.read_into(self._base + slot_off, sb)
        if (not slot_is_valid(sb, slot_off, self._geo.vmax, self._acc) or sb[0] != T_PUT
                or sb[1] != len(kb) or u16(sb, 2) != (p & VMASK)):
            self._corrupt += 1
            return -1
        return u16(sb, 4)

    def _data_matches(self, kb, value, vlen, sb):
        """The CRC of kb + value[:vlen] equals the data CRC in slot sb (else counted as corrupt)."""
        acc = self._acc
        crc_reset(acc)
        crc_update(acc, kb, len(kb))
        crc_update(acc, value, vlen)
        if equal4(acc, sb, 8):
            return True
        self._corrupt += 1
        return False

    def keys(self):
        return list(self._index)

    def items(self):
        for k in self.keys():
            v = self.get(k)
            if v is not None:
                yield k, v

    def __contains__(self, key):
        return _key_bytes(key) in self._index

    def __len__(self):
        return len(self._index)

    def __iter__(self):
        return iter(self.keys())

    # --- writing ------------------------------------------------------------------------------------
    def put(self, key, value):
        kb = _key_bytes(key)
        t = type(value)
        if t is not bytes and t is not bytearray and t is not memoryview:
            raise TypeError("value must be bytes")
        if len(value) > self._geo.vmax:
            raise ValueError("value longer than %d bytes" % self._geo.vmax)
        self._write(T_PUT, kb, value)

    def delete(self, key):
        kb = _key_bytes(key)
        if kb not in self._index:
            return False
        self._write(T_DEL, kb, b"")
        return True

    def compact(self):
        self._compact(None, 0, None, True)

    def _write(self, typ, kb, value):
        klen = len(kb)
        vlen = len(value)
        old = self._index.get(kb)
        old_fp = 0 if old is None else SLOT + klen + (old & VMASK)
        if typ == T_PUT and self._live - old_fp + SLOT + klen + vlen > self.capacity:
            raise StateFull("live entries would exceed the %d-byte sector capacity" % self.capacity)
        dlen = klen + vlen
        if self._slot_ptr - self._data_end < dlen + SLOT:
            self._compact(kb, typ, value, True)    # the compaction carries the change
            return
        flash, base, d = self._flash, self._base, self._data_end
        dcrc = self._dcrc
        crc_reset(dcrc)
        crc_update(dcrc, kb, klen)
        crc_update(dcrc, value, vlen)
        flash.program(base + d, kb)
        flash.program(base + d + klen, value)
        acc = self._acc
        crc_reset(acc)
        flash.crc_range(base + d, dlen, acc)
        slot_off = self._slot_ptr - SLOT
        if acc != dcrc or not self._write_slot(base + slot_off, typ, klen, vlen, d, dcrc):
            # Worn or disturbed flash: seal this sector; the compaction carries the change.
            self._data_end = self._slot_ptr
            self._compact(kb, typ, value, True)
            return
        self._data_end = d + dlen
        self._slot_ptr = slot_off                # the put is durable from here
        self._live -= old_fp
        if typ == T_PUT:
            self._index[kb] = (slot_off << VBITS) | vlen
            self._live += SLOT + dlen
        elif old is not None:
            del self._index[kb]

    def _write_slot(self, addr, typ, klen, vlen, d, dcrc):
        """Program the slot (the commit point of a put) and read it back; True when intact."""
        sb = self._sb_out
        encode_slot(sb, typ, klen, vlen, d, dcrc, self._acc)
        self._flash.program(addr, sb)
        self._flash.read_into(addr, self._sb_back)
        return self._sb_back == sb

    # --- compaction ---------------------------------------------------------------------------------
    def _compact(self, kb, typ, value, keep):
        """Copy the live entries (all of them when keep, none for a format), with kb replaced by
        value (T_PUT) or dropped (T_DEL), into the next sector that takes them; commit it."""
        gen = self._gen + 1
        if gen > GEN_MAX:
            raise StoreError("generation counter exhausted")
        n = self._geo.n
        t = self._act
        for _ in range(n - 1):
            t = (t + 1) % n
            sector = self._compact_into(t, gen, kb, typ, value, keep)
            if sector is not None:
                self._adopt(t, gen, sector)
                self._session_compactions += 1
                return
            self._bad += 1
        raise StoreError("no sector accepts a compaction (flash worn out)")

    def _erase_blank(self, tb):
        """Erase the sector at tb and prove it blank (one retry); False when it will not erase."""
        ss = self._geo.ss
        t = tb // ss
        for _ in range(2):
            self._flash.erase(tb)
            self._counts[t] += 1
            self._session_erases += 1
            if self._flash.is_blank(tb, ss):
                return True
        return False

    def _compact_into(self, t, gen, kb, typ, value, keep):
        """Build generation gen in sector t; its index (a Sector) once committed, or None."""
        flash, ss = self._flash, self._geo.ss
        tb = t * ss
        if not self._erase_blank(tb):
            return None
        src, sb, dcrc, acc = self._base, self._sb, self._dcrc, self._acc
        index = {}
        live = 0
        d = DATA0
        s = ss
        for key, p in (self._index.items() if keep else ()):
            if key == kb:
                continue
            off = self._read_slot(key, p, sb)
            if off < 0:
                continue                          # corrupt since mount: counted, dropped
            dlen = len(key) + (p & VMASK)
            if d + dlen > s - SLOT:
                raise StoreError("live entries exceed a sector")   # unreachable: the capacity check
            crc_reset(dcrc)
            flash.copy(src + off, tb + d, dlen, dcrc)
            if not equal4(dcrc, sb, 8):
                self._corrupt += 1                # source went bad: dropped, its copy unreferenced
                d += dlen
                continue
            s = self._commit_entry(tb, d, s, T_PUT, len(key), p & VMASK, dcrc)
            if s < 0:
                return None
            index[key] = (s << VBITS) | (p & VMASK)
            live += SLOT + dlen
            d += dlen
        if typ == T_PUT:
            klen, vlen = len(kb), len(value)
            crc_reset(dcrc)
            crc_update(dcrc, kb, klen)
            crc_update(dcrc, value, vlen)
            flash.program(tb + d, kb)
            flash.program(tb + d + klen, value)
            s = self._commit_entry(tb, d, s, T_PUT, klen, vlen, dcrc)
            if s < 0:
                return None
            index[kb] = (s << VBITS) | vlen
            live += SLOT + klen + vlen
            d += klen + vlen
        # Commit: header copy A makes the sector valid and newest; copy B only guards against flips.
        hb = self._hb
        encode_header(hb, self._geo.log2, self._geo.n, gen, self._counts[t], acc)
        if not program_header(flash, tb, hb):
            # This sector must never claim generation gen next to the one tried after it.
            flash.program(tb, bytes(HDRS))
            return None
        return Sector(index, live, d, s, 0)

    def _commit_entry(self, tb, d, s, typ, klen, vlen, dcrc):
        """Check the data just programmed at tb + d against dcrc, then write its slot below s.
        The new slot offset, or -1 when the flash did not take it."""
        acc = self._acc
        crc_reset(acc)
        self._flash.crc_range(tb + d, klen + vlen, acc)
        if acc != dcrc:
            return -1
        s -= SLOT
        if not self._write_slot(tb + s, typ, klen, vlen, d, dcrc):
            return -1
        return s

    # --- statistics ---------------------------------------------------------------------------------
    def stats(self):
        ss = self._geo.ss
        return {
            "keys": len(self._index),
            "live_bytes": self._live,
            "capacity_bytes": self.capacity,
            "used_bytes": self._data_end + (ss - self._slot_ptr),
            "free_bytes": self._slot_ptr - self._data_end,
            "generation": self._gen,
            "compactions": self._gen - 1,
            "session_compactions": self._session_compactions,
            "active_sector": self._act,
            "sectors": self._geo.n,
            "erase_counts": list(self._counts),
            "session_erases": self._session_erases,
            "bad_sectors": self._bad,
            "corrupt_skipped": self._corrupt,
            "mount_bytes_read": self._mount_read,
            "format_version": VERSION,
        }

