"""State: a power-safe key -> latest value store on NOR flash (format and protocol: STATE.md).

    s = State(dev)              # mounts; formats an all-0xFF device; StoreError on anything else
    s.put(b"cfg", b"...")       # atomic and durable once it returns
    s.get(b"cfg", default)      # latest value (bytes) or default
    s.delete(b"cfg")            # durable tombstone; True if the key existed
    s.keys(), s.items()         # live keys (as bytes) / (key, value) pairs
    s.compact()                 # also automatic when the active sector is full
    State.format(dev)           # the only way to wipe a device

One sector is active at a time: entry data grows up from its header, fixed-size slots grow down from
its end, and a put is visible once its slot is programmed. Compaction copies the live entries into the
next sector of the rotation and commits it by writing its header last, with a higher generation.
Keys are 1..32 bytes (str keys are stored UTF-8 encoded and come back as bytes); values 0..1024 bytes.
"""
import binascii

from micropython import const

from .errors import StoreError

MAGIC = b"UMST"
VERSION = 1
MAX_KEY = const(32)
MAX_VALUE = const(1024)
GEN_MAX = 0xFFFFFFFE

_HDR = const(20)           # one header copy: magic, version, log2 sector, sectors, generation, erases, crc
_DATA0 = const(40)         # two header copies, then entry data
_SLOT = const(16)          # type, klen, vlen, data offset, 0xFFFF, data crc, slot crc
_T_PUT = const(0x50)
_T_DEL = const(0x44)
_VBITS = const(11)         # index value = (slot offset << 11) | value length
_VMASK = const(0x7FF)
_SCRATCH = const(256)
_FF = b"\xff" * _SCRATCH
_FF16 = b"\xff" * _SLOT


def _u16(b, o):
    return b[o] | (b[o + 1] << 8)


def _u32(b, o):
    return b[o] | (b[o + 1] << 8) | (b[o + 2] << 16) | (b[o + 3] << 24)


def _set16(b, o, v):
    b[o] = v & 0xFF
    b[o + 1] = (v >> 8) & 0xFF


def _set32(b, o, v):
    b[o] = v & 0xFF
    b[o + 1] = (v >> 8) & 0xFF
    b[o + 2] = (v >> 16) & 0xFF
    b[o + 3] = (v >> 24) & 0xFF


def _key_bytes(key):
    if type(key) is bytes:              # the allocation-free path: no tuple built for isinstance
        if not 0 < len(key) <= MAX_KEY:
            raise ValueError("key must be 1..%d bytes" % MAX_KEY)
        return key
    if isinstance(key, str):
        key = key.encode()
    elif isinstance(key, (bytearray, memoryview)):
        key = bytes(key)
    elif not isinstance(key, bytes):
        raise TypeError("key must be str or bytes")
    if not 0 < len(key) <= MAX_KEY:
        raise ValueError("key must be 1..%d bytes" % MAX_KEY)
    return key


def _geometry(dev):
    ss = dev.sector_size
    n = dev.size // ss
    log2 = 0
    while (1 << log2) < ss:
        log2 += 1
    if (1 << log2) != ss or not 512 <= ss <= 65536:
        raise ValueError("sector size must be a power of two in 512..65536")
    if n < 2 or n > 0xFFFF or dev.size % ss:
        raise ValueError("State needs 2..65535 whole sectors")
    return ss, n, log2


class StateFull(StoreError):
    """The live entries plus the new one would not fit in one sector: nothing was written."""


class State:
    def __init__(self, dev):
        self._dev = dev
        self._ss, self._n, self._log2 = _geometry(dev)
        self._rinto = getattr(dev, "readinto", None)
        self.max_key = MAX_KEY
        self.capacity = self._ss - _DATA0     # bytes of live entries (16 + key + value each) that fit
        self.max_value = min(MAX_VALUE, self.capacity - _SLOT - MAX_KEY)
        # Preallocated buffers and views: get/put never allocate these again.
        self._sb = bytearray(_SLOT)
        self._sb12 = memoryview(self._sb)[:12]
        self._vb = bytearray(_SLOT)
        self._hb = bytearray(2 * _HDR)
        self._hmv = memoryview(self._hb)
        self._scratch = bytearray(_SCRATCH)
        self._scmv = memoryview(self._scratch)
        self._nread = 0
        self._corrupt = 0
        self._session_compactions = 0
        self._session_erases = 0
        self._mount()

    # --- formatting ---------------------------------------------------------------------------------
    @classmethod
    def format(cls, dev):
        """Wipe dev and start an empty store; returns it mounted. A cut leaves the old store or StoreError."""
        ss, n, log2 = _geometry(dev)
        hb = bytearray(2 * _HDR)
        found = []
        for s in range(n):
            hb[:] = dev.read(s * ss, 2 * _HDR)
            try:
                h = _parse_pair(hb, log2, n, False)
            except StoreError:
                h = None        # foreign version or geometry: wiped below like anything else
            if h is not None:
                found.append((h[0], s, h[1]))
        found.sort()
        # Invalidate the headers oldest first, the active one last: a cut part-way leaves the current
        # store (or, once the active header is gone, a device that raises StoreError) -- never a stale
        # older generation.
        zeros = bytes(2 * _HDR)
        counts = [0] * n
        for gen, s, erases in found:
            counts[s] = erases
            _program_split(dev, s * ss, zeros)
        for s in range(n):
            dev.erase_sector(s * ss)
        if not _write_header(dev, 0, hb, log2, n, 1, counts[0] + 1):
            raise StoreError("cannot format: sector 0 does not program")
        return cls(dev)

    # --- public API ---------------------------------------------------------------------------------
    def get(self, key, default=None):
        kb = _key_bytes(key)
        p = self._index.get(kb)
        if p is None:
            return default
        vlen = p & _VMASK
        d = self._entry_off(kb, p)
        if d < 0:
            return default
        v = self._dev.read(self._base + d + len(kb), vlen)
        self._nread += vlen
        if binascii.crc32(v, binascii.crc32(kb)) != _u32(self._sb, 8):
            self._corrupt += 1
            return default
        return v

    def get_into(self, key, buf):
        """Read the value into buf (len(buf) >= value length); returns the length, or -1 if absent.
        Allocation-free when len(buf) equals the value length."""
        kb = _key_bytes(key)
        p = self._index.get(kb)
        if p is None:
            return -1
        vlen = p & _VMASK
        if len(buf) < vlen:
            raise ValueError("buffer smaller than the %d-byte value" % vlen)
        d = self._entry_off(kb, p)
        if d < 0:
            return -1
        view = buf if len(buf) == vlen else memoryview(buf)[:vlen]
        self._readinto(self._base + d + len(kb), view)
        if binascii.crc32(view, binascii.crc32(kb)) != _u32(self._sb, 8):
            self._corrupt += 1
            return -1
        return vlen

    def put(self, key, value):
        kb = _key_bytes(key)
        if not isinstance(value, (bytes, bytearray, memoryview)):
            raise TypeError("value must be bytes")
        if len(value) > self.max_value:
            raise ValueError("value longer than %d bytes" % self.max_value)
        self._write(_T_PUT, kb, value)

    def delete(self, key):
        kb = _key_bytes(key)
        if kb not in self._index:
            return False
        self._write(_T_DEL, kb, b"")
        return True

    def compact(self):
        self._compact(None, 0, None)

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

    def stats(self):
        used = _DATA0 + (self._data_end - _DATA0) + (self._ss - self._slot_ptr)
        return {
            "keys": len(self._index),
            "live_bytes": self._live,
            "capacity_bytes": self.capacity,
            "used_bytes": used,
            "free_bytes": self._slot_ptr - self._data_end,
            "generation": self._gen,
            "compactions": self._gen - 1,
            "session_compactions": self._session_compactions,
            "active_sector": self._act,
            "sectors": self._n,
            "erase_counts": list(self._counts),
            "session_erases": self._session_erases,
            "bad_sectors": self._bad,
            "corrupt_skipped": self._corrupt,
            "mount_bytes_read": self._mount_read,
        }

    # --- mount --------------------------------------------------------------------------------------
    def _mount(self):
        ss, n = self._ss, self._n
        best = -1
        best_gen = 0
        best_bad = 0
        tie = False
        counts = [None] * n
        for s in range(n):
            self._readinto(s * ss, self._hb)
            h = _parse_pair(self._hb, self._log2, n, True)
            if h is None:
                continue
            gen, erases, bad_copies = h
            counts[s] = erases
            if gen > best_gen:
                best, best_gen, best_bad, tie = s, gen, bad_copies, False
            elif gen == best_gen:
                tie = True
        if best < 0:
            if self._blank_from(0, self._dev.size) >= 0:
                raise StoreError("not a State store (no valid sector header, device not blank)")
            if not _write_header(self._dev, 0, self._hb, self._log2, n, 1, 0):
                raise StoreError("cannot format: sector 0 does not program")
            self._mount_read = self._nread
            self._reset_counts(counts, 0)
            self._counts[0] = 0
            self._open_sector(0, 1)
            return
        if tie:
            raise StoreError("two sectors claim generation %d" % best_gen)
        self._corrupt += best_bad
        self._reset_counts(counts, counts[best])
        self._open_sector(best, best_gen)
        self._scan()
        self._mount_read = self._nread

    def _reset_counts(self, counts, guess):
        # A sector whose header is gone (torn erase, never used) is assumed as worn as the active one.
        self._counts = [guess if c is None else c for c in counts]
        self._bad = 0

    def _open_sector(self, s, gen):
        self._act = s
        self._gen = gen
        self._base = s * self._ss
        self._index = {}
        self._live = 0
        self._data_end = _DATA0
        self._slot_ptr = self._ss

    def _scan(self):
        """Index the active sector: slots oldest (sector end) to newest, each checked by two CRCs."""
        ss, base, sb, index = self._ss, self._base, self._sb, self._index
        data_end = _DATA0
        slot = ss - _SLOT
        while slot >= data_end:
            self._readinto(base + slot, sb)
            if sb == _FF16:
                break
            cur = slot
            slot -= _SLOT
            if not self._slot_ok(cur):
                self._corrupt += 1
                continue
            typ, klen, vlen, d = sb[0], sb[1], _u16(sb, 2), _u16(sb, 4)
            if d < data_end:
                self._corrupt += 1
                continue
            data_end = d + klen + vlen
            crc = _u32(sb, 8)
            key = bytes(self._dev.read(base + d, klen))
            self._nread += klen
            if self._crc_range(base + d + klen, vlen, binascii.crc32(key)) != crc:
                self._corrupt += 1
                continue
            old = index.get(key)
            if old is not None:
                self._live -= _SLOT + klen + (old & _VMASK)
            if typ == _T_PUT:
                index[key] = (cur << _VBITS) | vlen
                self._live += _SLOT + klen + vlen
            elif old is not None:
                del index[key]
        self._slot_ptr = slot + _SLOT
        # Anything programmed between the data and the slots (a torn put) must not be written over.
        last = self._blank_from(base + data_end, max(0, self._slot_ptr - data_end))
        self._data_end = data_end if last < 0 else data_end + last + 1

    def _slot_ok(self, slot_off):
        """Check the slot in self._sb (read from slot_off): CRC, type, lengths, data below the slot."""
        sb = self._sb
        if binascii.crc32(self._sb12) != _u32(sb, 12) or sb[6] != 0xFF or sb[7] != 0xFF:
            return False
        typ = sb[0]
        klen = sb[1]
        vlen = _u16(sb, 2)
        d = _u16(sb, 4)
        if typ == _T_DEL:
            if vlen:
                return False
        elif typ != _T_PUT or vlen > self.max_value:
            return False
        return 0 < klen <= MAX_KEY and d >= _DATA0 and d + klen + vlen <= slot_off

    def _entry_off(self, kb, p):
        """Read and check the slot of an indexed entry into self._sb; its data offset, or -1 if corrupt."""
        slot_off = p >> _VBITS
        sb = self._sb
        self._readinto(self._base + slot_off, sb)
        if (not self._slot_ok(slot_off) or sb[0] != _T_PUT or sb[1] != len(kb)
                or _u16(sb, 2) != (p & _VMASK)):
            self._corrupt += 1
            return -1
        return _u16(sb, 4)

    # --- writing ------------------------------------------------------------------------------------
    def _write(self, typ, kb, value):
        old = self._index.get(kb)
        old_fp = 0 if old is None else _SLOT + len(kb) + (old & _VMASK)
        if typ == _T_PUT and self._live - old_fp + _SLOT + len(kb) + len(value) > self.capacity:
            raise StateFull("live entries would exceed the %d-byte sector capacity" % self.capacity)
        dlen = len(kb) + len(value)
        if self._slot_ptr - self._data_end < dlen + _SLOT:
            # No room: the compaction itself carries the change, committed with the new sector.
            self._compact(kb, typ, value)
            return
        base, d = self._base, self._data_end
        crc = binascii.crc32(value, binascii.crc32(kb))
        self._program(base + d, kb)
        if len(value):
            self._program(base + d + len(kb), value)
        if self._crc_range(base + d, dlen, 0) != crc:
            self._data_end = self._slot_ptr      # seal this sector: the compaction carries the change
            self._compact(kb, typ, value)
            return
        self._data_end = d + dlen
        slot_off = self._slot_ptr - _SLOT
        if not self._write_slot(base + slot_off, typ, len(kb), len(value), d, crc):
            self._data_end = self._slot_ptr
            self._compact(kb, typ, value)
            return
        self._slot_ptr = slot_off                # the put is durable from here
        self._live -= old_fp
        if typ == _T_PUT:
            self._index[kb] = (slot_off << _VBITS) | len(value)
            self._live += _SLOT + dlen
        elif old is not None:
            del self._index[kb]

    def _write_slot(self, addr, typ, klen, vlen, d, crc):
        sb = self._sb
        sb[0] = typ
        sb[1] = klen
        _set16(sb, 2, vlen)
        _set16(sb, 4, d)
        sb[6] = sb[7] = 0xFF
        _set32(sb, 8, crc)
        _set32(sb, 12, binascii.crc32(self._sb12))
        self._program(addr, sb)
        self._readinto(addr, self._vb)
        return self._vb == sb

    def _compact(self, kb, typ, value):
        """Copy the live entries (with kb replaced by value, or dropped) into the next sector."""
        gen = self._gen + 1
        if gen > GEN_MAX:
            raise StoreError("generation counter exhausted")
        t = self._act
        for _ in range(self._n - 1):
            t = (t + 1) % self._n
            if self._compact_into(t, gen, kb, typ, value):
                self._session_compactions += 1
                return
            self._bad += 1
        raise StoreError("no sector accepts a compaction (flash worn out)")

    def _compact_into(self, t, gen, kb, typ, value):
        dev, ss = self._dev, self._ss
        tb = t * ss
        for _ in range(2):
            dev.erase_sector(tb)
            self._counts[t] += 1
            self._session_erases += 1
            if self._blank_from(tb, ss) < 0:
                break
        else:
            return False
        src, sb = self._base, self._sb
        index = {}
        live = 0
        d = _DATA0
        s = ss
        for key, p in self._index.items():
            if key == kb:
                continue
            off = self._entry_off(key, p)
            if off < 0:
                continue                          # corrupt since mount: counted, dropped
            klen, vlen, crc = len(key), p & _VMASK, _u32(sb, 8)
            if d + klen + vlen > s - _SLOT:
                raise StoreError("live entries exceed a sector")   # the capacity check makes this unreachable
            if self._copy(src + off, tb + d, klen + vlen) != crc:
                self._corrupt += 1                # source went bad: drop it, its copy stays unreferenced
                d += klen + vlen
                continue
            if self._crc_range(tb + d, klen + vlen, 0) != crc:
                return False
            s -= _SLOT
            if not self._write_slot(tb + s, _T_PUT, klen, vlen, d, crc):
                return False
            index[key] = (s << _VBITS) | vlen
            live += _SLOT + klen + vlen
            d += klen + vlen
        if typ == _T_PUT:
            dlen = len(kb) + len(value)
            crc = binascii.crc32(value, binascii.crc32(kb))
            self._program(tb + d, kb)
            if len(value):
                self._program(tb + d + len(kb), value)
            if self._crc_range(tb + d, dlen, 0) != crc:
                return False
            s -= _SLOT
            if not self._write_slot(tb + s, _T_PUT, len(kb), len(value), d, crc):
                return False
            index[kb] = (s << _VBITS) | len(value)
            live += _SLOT + dlen
            d += dlen
        # Commit: header copy A makes the sector valid and newest; copy B only guards against bit flips.
        if not _write_header(dev, tb, self._hb, self._log2, self._n, gen, self._counts[t]):
            # Make sure this sector can never also claim generation `gen` next to the one we move on to.
            _program_split(dev, tb, bytes(2 * _HDR))
            return False
        self._act, self._gen, self._base = t, gen, tb
        self._index, self._live = index, live
        self._data_end, self._slot_ptr = d, s
        return True

    def _copy(self, src, dst, n):
        """Copy n bytes flash to flash through the scratch buffer; returns the CRC of what was read."""
        crc = 0
        page = self._dev.page_size
        while n:
            k = min(n, _SCRATCH, page - dst % page)
            view = self._scratch if k == _SCRATCH else self._scmv[:k]
            self._readinto(src, view)
            crc = binascii.crc32(view, crc)
            self._dev.program(dst, view)
            src += k
            dst += k
            n -= k
        return crc

    # --- device helpers -----------------------------------------------------------------------------
    def _readinto(self, addr, buf):
        self._nread += len(buf)
        if self._rinto is not None:
            self._rinto(addr, buf)
        else:
            buf[:] = self._dev.read(addr, len(buf))

    def _program(self, addr, data):
        _program_split(self._dev, addr, data)

    def _crc_range(self, addr, n, crc):
        sc = self._scratch
        while n >= _SCRATCH:
            self._readinto(addr, sc)
            crc = binascii.crc32(sc, crc)
            addr += _SCRATCH
            n -= _SCRATCH
        if n:
            view = self._scmv[:n]
            self._readinto(addr, view)
            crc = binascii.crc32(view, crc)
        return crc

    def _blank_from(self, addr, n):
        """Offset of the last non-0xFF byte in [addr, addr+n), or -1 when all erased."""
        last = -1
        off = 0
        while off < n:
            k = min(_SCRATCH, n - off)
            view = self._scratch if k == _SCRATCH else self._scmv[:k]
            self._readinto(addr + off, view)
            if view != _FF[:k]:
                for i in range(k - 1, -1, -1):
                    if view[i] != 0xFF:
                        last = off + i
                        break
            off += k
        return last


def _program_split(dev, addr, data):
    """Program data without crossing a page boundary (NOR rule), one page piece at a time."""
    n = len(data)
    page = dev.page_size
    if addr // page == (addr + n - 1) // page:
        dev.program(addr, data)
        return
    mv = memoryview(data)
    off = 0
    while off < n:
        k = min(n - off, page - (addr + off) % page)
        dev.program(addr + off, mv[off:off + k])
        off += k


def _header_into(hb, o, log2, n, gen, erases):
    hb[o:o + 4] = MAGIC
    hb[o + 4] = VERSION
    hb[o + 5] = log2
    _set16(hb, o + 6, n)
    _set32(hb, o + 8, gen)
    _set32(hb, o + 12, erases)
    _set32(hb, o + 16, binascii.crc32(memoryview(hb)[o:o + 16]))


def _write_header(dev, base, hb, log2, n, gen, erases):
    """Program header copy A, then copy B; True when copy A reads back intact (the commit point)."""
    _header_into(hb, 0, log2, n, gen, erases)
    hb[_HDR:] = hb[:_HDR]
    a = bytes(hb[:_HDR])
    _program_split(dev, base, a)
    if dev.read(base, _HDR) != a:
        return False
    _program_split(dev, base + _HDR, a)
    return True


def _parse_one(hb, o, log2, n):
    """(generation, erases) of a header copy; None if it is not one; StoreError if it is one we refuse."""
    if hb[o:o + 4] != MAGIC or binascii.crc32(memoryview(hb)[o:o + 16]) != _u32(hb, o + 16):
        return None
    if hb[o + 4] != VERSION:
        raise StoreError("unsupported State format version %d" % hb[o + 4])
    if hb[o + 5] != log2 or _u16(hb, o + 6) != n:
        raise StoreError("State was formatted for another geometry")
    gen = _u32(hb, o + 8)
    if not 0 < gen <= GEN_MAX:
        raise StoreError("bad generation %d" % gen)
    return gen, _u32(hb, o + 12)


def _parse_pair(hb, log2, n, strict):
    """(generation, erases, bad copies) from the two header copies, or None; copy A wins.
    Two valid copies that disagree were not written by us: StoreError (strict) or None."""
    a = _parse_one(hb, 0, log2, n)
    b = _parse_one(hb, _HDR, log2, n)
    if a is None and b is None:
        return None
    if a is not None and b is not None:
        if a != b:
            if strict:
                raise StoreError("sector header copies disagree")
            return None
        return a[0], a[1], 0
    if a is None:
        return b[0], b[1], 1
    # Copy B blank or torn: either the commit was cut after copy A, or a bit flip.
    return a[0], a[1], 0 if hb[_HDR:2 * _HDR] == _FF[:_HDR] else 1
