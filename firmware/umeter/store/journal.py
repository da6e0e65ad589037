"""Journal: a power-loss-safe, wear-levelled record log on SPI NOR (DESIGN.md 3.3, spec in JOURNAL.md).

    j = Journal(dev)                 # mount (an all-0xFF device is an empty journal); StoreError otherwise
    seq = j.append(payload)          # durable once it returns; seqs strictly increase, never reused
    for seq, payload in j.records(since=0): ...
    j.last_seq, j.next_seq, j.max_payload, j.stats(payload_size=64), j.capacity(payload_size)
    Journal.format(dev)              # explicit wipe

Sectors form a ring. Each used sector starts with a 16-byte header (format byte, 48-bit base sequence,
erase count + sequence gap, CRC-32, claim byte); records follow densely: a 13-byte record header
(commit byte, 48-bit seq, length, CRC-32 over seq+length+payload) then the payload. The body is
programmed first with the commit byte left at 0xFF, read back and checked, then the commit byte is
programmed to 0x00 on its own. Mount reads 15 bytes per sector plus the head sector's records.
"""
from binascii import crc32

from .errors import StoreError

FORMAT = 0x4A           # format/version byte of a journal sector header ("J", version 1)
SECTOR_HDR = 16         # bytes reserved at the start of every sector
HDR_READ = 15           # bytes of it read at mount (the claim byte is read for the head only)
CLAIM_AT = 15           # claim byte: programmed to 0x00 before the successor sector is erased
REC_HDR = 13            # commit(1) seq(6) length(2) crc(4)
COMMITTED = 0x00
SEQ_LIMIT = 1 << 48            # a 48-bit sequence number never wraps: append refuses at the limit
EC_MASK = 0xFFFFF       # erase count: low 20 bits of the ec/gap word (saturates)
GAP_MAX = 0xFFF         # gap: high 12 bits

# sector states (RAM only, one byte per sector)
_FREE = 0               # blank or garbage: erased/blank-checked before use
_LIVE = 1               # valid header
_DAMAGED = 2            # header unreadable but holds valid records (base taken from its first record)
_RETIRED = 3            # worn out, never used again (persistent: zeroed header)
_WORN = 4               # live, but a program failed in it: retired when the ring reaches it

# slot results
_OK = 0                 # committed, CRC good
_OPEN = 1               # CRC good, commit byte still 0xFF (the in-flight append of a power cut)
_BAD = 2                # CRC bad or commit byte torn; length plausible so the walk goes on
_LOST = 3               # length implausible: the rest of the sector cannot be parsed
_END = 4                # blank record header: end of the sector's records

# header results
_H_VALID = 0
_H_BLANK = 1
_H_RETIRED = 2
_H_BAD = 3

_FF13 = b"\xff" * REC_HDR
_ZERO1 = b"\x00"
_ZEROS = b"\x00" * HDR_READ


def _put_le(buf, at, value, n):
    for k in range(n):
        buf[at + k] = (value >> (8 * k)) & 0xFF


def _get_le48(buf, at):
    return _get_le32(buf, at) | (buf[at + 4] << 32) | (buf[at + 5] << 40)


def _get_le32(buf, at):
    return buf[at] | (buf[at + 1] << 8) | (buf[at + 2] << 16) | (buf[at + 3] << 24)


class Journal:
    def __init__(self, dev):
        ss = dev.sector_size
        if ss < 256 or dev.size < 2 * ss or dev.size % ss:
            raise StoreError("journal needs at least 2 sectors of >= 256 bytes")
        self.dev = dev
        self._ss = ss
        self._n = dev.size // ss
        self.max_payload = min(ss - SECTOR_HDR - REC_HDR, 0xFFFF)
        self._max_slots = (ss - SECTOR_HDR) // (REC_HDR + 1)
        self._state = bytearray(self._n)
        self._hb = bytearray(SECTOR_HDR)
        self._hbv = memoryview(self._hb)
        self._rh = bytearray(REC_HDR)
        self._rhv = memoryview(self._rh)
        # fixed views, made once: slicing per record would allocate
        self._rh_sl = self._rhv[1:9]            # seq + length: the CRC's header part
        self._hb1 = self._hbv[:1]
        self._hb11 = self._hbv[:11]
        self._hb15 = self._hbv[:HDR_READ]
        chunk = dev.page_size if dev.page_size <= ss else ss
        self._buf = bytearray(chunk)
        self._bufv = memoryview(self._buf)
        self._ff = b"\xff" * chunk
        self._readinto = getattr(dev, "readinto", None)
        self._reads = 0
        self._corrupt = 0
        self._mount()

    # --- low-level I/O -------------------------------------------------------------------------------
    def _rd(self, addr, mv):
        self._reads += len(mv)
        if self._readinto is not None:
            self._readinto(addr, mv)
        else:
            mv[:] = self.dev.read(addr, len(mv))

    def _read(self, addr, n):
        self._reads += n
        return self.dev.read(addr, n)

    def _crc_range(self, addr, n, crc):
        """CRC-32 of n bytes of flash from addr, continuing crc, through the fixed buffer."""
        bv = self._bufv
        size = len(bv)
        while n > 0:
            k = n if n < size else size
            mv = bv if k == size else bv[:k]
            self._rd(addr, mv)
            crc = crc32(mv, crc)
            addr += k
            n -= k
        return crc

    def _blank(self, addr, n):
        """True when n bytes from addr read as 0xFF."""
        buf = self._buf
        size = len(buf)
        while n > 0:
            if n >= size:
                self._rd(addr, self._bufv)
                if buf != self._ff:
                    return False
                k = size
            else:
                k = n
                if self._read(addr, k) != self._ff[:k]:
                    return False
            addr += k
            n -= k
        return True

    # --- sector headers ------------------------------------------------------------------------------
    def _hdr(self, sec):
        """Read sector sec's header; on _H_VALID sets self._hbase, self._hgap, self._hec."""
        hb = self._hb
        self._rd(sec * self._ss, self._hb15)
        if hb[0] == FORMAT and crc32(self._hb11) == _get_le32(hb, 11):
            self._hbase = _get_le48(hb, 1)
            w = _get_le32(hb, 7)
            self._hec = w & EC_MASK
            self._hgap = w >> 20
            if self._hbase:                     # seqs start at 1: a zero base is not ours
                return _H_VALID
        zeros = 0
        ffs = 0
        for k in range(HDR_READ):
            if hb[k] == 0:
                zeros += 1
            elif hb[k] == 0xFF:
                ffs += 1
        if ffs == HDR_READ:
            return _H_BLANK
        if hb[0] == 0 and zeros >= 12:
            return _H_RETIRED
        return _H_BAD

    def _write_hdr(self, sec, base, gap, ec):
        hb = self._hb
        hb[0] = FORMAT
        _put_le(hb, 1, base, 6)
        _put_le(hb, 7, (ec if ec < EC_MASK else EC_MASK) | ((gap if gap < GAP_MAX else GAP_MAX) << 20), 4)
        _put_le(hb, 11, crc32(self._hb11), 4)
        self.dev.program(sec * self._ss, self._hb15)
        return self._hdr(sec) == _H_VALID and self._hbase == base

    def _retire(self, sec):
        """Zero the header (repeated: a worn cell may need several tries) and never use sec again."""
        self._state[sec] = _RETIRED
        for _ in range(4):
            self.dev.program(sec * self._ss, _ZEROS)
            if self._hdr(sec) == _H_RETIRED:
                return

    # --- record slots --------------------------------------------------------------------------------
    def _slot(self, addr, off, with_payload):
        """Examine the record slot at sector address addr + off; sets self._sq, self._ln (and self._pl)."""
        if off + REC_HDR > self._ss:
            return _END
        rh = self._rh
        self._rd(addr + off, self._rhv)
        if rh == _FF13:
            return _END
        n = rh[7] | (rh[8] << 8)
        if n < 1 or n > self.max_payload or off + REC_HDR + n > self._ss:
            return _LOST
        self._ln = n
        self._sq = _get_le48(rh, 1)
        crc = crc32(self._rh_sl)
        if with_payload:
            self._pl = self._read(addr + off + REC_HDR, n)
            crc = crc32(self._pl, crc)
        else:
            crc = self._crc_range(addr + off + REC_HDR, n, crc)
        if crc != _get_le32(rh, 9) or not self._sq:
            return _BAD
        if rh[0] == COMMITTED:
            return _OK
        if rh[0] == 0xFF:
            return _OPEN
        return _BAD

    # --- mount ---------------------------------------------------------------------------------------
    def _succ(self, sec):
        """Next non-retired sector after sec in ring order (from sector 0 when sec < 0); -1 if none."""
        n = self._n
        st = self._state
        start = sec + 1 if sec >= 0 else 0
        for k in range(n):
            i = (start + k) % n
            if st[i] != _RETIRED:
                return i
        return -1

    def _mount(self):
        n = self._n
        ss = self._ss
        st = self._state
        self._reads = 0
        head = -1
        hbase = -1
        hgap = 0
        hec = 0
        t1 = t2 = -1            # the two oldest live sectors, their bases and gaps
        b1 = b2 = g1 = g2 = 0
        gsum = 0
        retired = 0
        for i in range(n):
            k = self._hdr(i)
            if k == _H_VALID:
                base, gap, ec = self._hbase, self._hgap, self._hec
                st[i] = _LIVE
            elif k == _H_RETIRED:
                st[i] = _RETIRED
                retired += 1
                continue
            elif k == _H_BLANK:
                st[i] = _FREE
                continue
            else:
                # Torn header write, torn erase, or a flipped bit: live only if its first record is sound.
                r = self._slot(i * ss, SECTOR_HDR, False)
                if r != _OK and r != _OPEN:
                    st[i] = _FREE
                    continue
                base, gap, ec = self._sq, 0, 0
                st[i] = _DAMAGED
            gsum += gap
            if base > hbase:
                head, hbase, hgap, hec = i, base, gap, ec
            if t1 < 0 or base < b1:
                t2, b2, g2 = t1, b1, g1
                t1, b1, g1 = i, base, gap
            elif t2 < 0 or base < b2:
                t2, b2, g2 = i, base, gap
        self._head = head
        self._corrupt = 0
        if head < 0:
            if not retired:
                self._check_blank()
            self._empty()
            self.mount_bytes_read = self._reads
            return
        # Claimed successor: its erase had begun, so whatever it still holds is dropped (retention).
        self._rd(head * ss + CLAIM_AT, self._hb1)
        self._claimed = self._hb[0] != 0xFF
        if self._claimed:
            v = self._succ(head)
            if v != head and v == t1 and (st[v] == _LIVE or st[v] == _DAMAGED):
                st[v] = _FREE
                gsum -= g1
                t1, b1, g1 = t2, b2, g2
            elif v != head and (st[v] == _LIVE or st[v] == _DAMAGED):
                st[v] = _FREE       # not the oldest: an inconsistent image, counts are approximate
        self._tail, self._tbase = t1, b1
        # Records before the head: seqs are consecutive inside a sector, so the bases telescope.
        count = hbase - b1 - (gsum - g1) if head != t1 else 0
        self._hbase_v, self._hgap_v, self._hec_v = hbase, hgap, hec
        self._scan_head(count)
        self.mount_bytes_read = self._reads

    def _check_blank(self):
        """No journal sector found: accept only an erased device (a torn first header is tolerated)."""
        ss = self._ss
        for i in range(self._n):
            if self._state[i] != _RETIRED and not self._blank(i * ss + SECTOR_HDR, ss - SECTOR_HDR):
                raise StoreError("not a journal: sector %d holds foreign data (use Journal.format)" % i)

    def _empty(self):
        self._tail = -1
        self._tbase = 0
        self._count = 0
        self._next = 1
        self._last = 0
        self._off = self._ss
        self._open_ok = False
        self._hcount = 0
        self._claimed = False
        self._hbase_v = self._hgap_v = self._hec_v = 0

    def _scan_head(self, before):
        ss = self._ss
        addr = self._head * ss
        base = self._hbase_v
        off = SECTOR_HDR
        count = 0
        last = base - 1
        anomaly = self._state[self._head] != _LIVE
        while True:
            r = self._slot(addr, off, False)
            if r == _END:
                break
            if r == _LOST:
                anomaly = True
                self._corrupt += 1
                break
            if r == _OK and self._sq > last:
                count += 1
                last = self._sq
            else:
                anomaly = True
                self._corrupt += 1
            off += REC_HDR + self._ln
        self._hcount = count
        self._count = before + count
        self._off = off
        self._open_ok = not anomaly
        # After an anomaly the sector may hold seqs we could not read: skip past every seq it could hold.
        self._next = base + self._max_slots if anomaly else last + 1
        if self._next <= last:
            self._next = last + 1
        self._last = last if count else (base - self._hgap_v - 1 if self._count else 0)
        if self._last < 0:
            self._last = 0

    # --- ring maintenance ----------------------------------------------------------------------------
    def _claim(self):
        if not self._claimed and self._head >= 0:
            self.dev.program(self._head * self._ss + CLAIM_AT, _ZERO1)
            self._claimed = True

    def _drop(self, sec):
        """Ring retention: sec's records are gone; move the tail and the record count on."""
        st = self._state
        st[sec] = _FREE
        if sec != self._tail:
            return
        n = self._n
        nxt = -1
        for k in range(1, n):
            i = (sec + k) % n
            if st[i] == _LIVE or st[i] == _DAMAGED or st[i] == _WORN:
                nxt = i
                break
        if nxt < 0:
            self._tail = -1
            self._count = 0
            return
        if nxt == self._head:
            nb, ng = self._hbase_v, self._hgap_v
        elif self._hdr(nxt) == _H_VALID:
            nb, ng = self._hbase, self._hgap
        else:
            nb, ng = self._tbase, 0       # damaged header: count becomes approximate
        self._count -= nb - ng - self._tbase
        if self._count < 0:
            self._count = 0
        self._tail, self._tbase = nxt, nb

    def _open_sector(self):
        st = self._state
        ss = self._ss
        cand = self._succ(self._head)
        for _ in range(self._n):
            if cand < 0 or cand == self._head:
                raise StoreError("journal worn out: no usable sector left")
            ec = self._hec_v
            s = st[cand]
            if s == _FREE:
                dirty = not self._blank(cand * ss, ss)
                if dirty and self._hdr(cand) == _H_VALID:
                    ec = self._hec
            else:
                self._claim()
                if self._hdr(cand) == _H_VALID:
                    ec = self._hec
                self._drop(cand)
                if s == _WORN:
                    self._retire(cand)
                    cand = self._succ(cand)
                    continue
                dirty = True
            if dirty:
                self._claim()
                self.dev.erase_sector(cand * ss)
                ec += 1
                if not self._blank(cand * ss, ss):
                    self._retire(cand)
                    cand = self._succ(cand)
                    continue
            base = self._next
            gap = base - (self._hbase_v + self._hcount) if self._head >= 0 else 0
            if gap < 0:
                gap = 0
            if not self._write_hdr(cand, base, gap, ec):
                self._retire(cand)
                cand = self._succ(cand)
                continue
            if self._head >= 0 and st[self._head] == _DAMAGED:
                st[self._head] = _LIVE   # a damaged head is just another old sector now
            st[cand] = _LIVE
            if self._tail < 0:
                self._tail, self._tbase = cand, base
            self._head = cand
            self._hbase_v, self._hgap_v, self._hec_v = base, gap, ec
            self._hcount = 0
            self._off = SECTOR_HDR
            self._open_ok = True
            self._claimed = False
            return
        raise StoreError("journal worn out: no usable sector left")

    # --- append --------------------------------------------------------------------------------------
    def append(self, payload):
        n = len(payload)
        if n < 1 or n > self.max_payload:
            raise ValueError("payload must be 1..%d bytes" % self.max_payload)
        s = self._next
        if s >= SEQ_LIMIT:
            raise StoreError("sequence numbers exhausted")
        need = REC_HDR + n
        for _ in range(self._n):
            if self._head < 0 or not self._open_ok or self._off + need > self._ss:
                self._open_sector()
            if self._write(s, payload, n):
                self._off += need
                self._hcount += 1
                self._count += 1
                self._next = s + 1
                self._last = s
                return s
            # The chip did not take the bits: that sector is worn. Same seq and payload go to a fresh
            # sector (same nonce, same plaintext: nothing new is revealed); this one is retired later.
            self._open_ok = False
            if self._hcount:
                self._state[self._head] = _WORN
            else:
                # Nothing committed in it: retire it now, so no two sectors ever share a base seq.
                if self._tail == self._head:
                    self._tail = -1
                self._retire(self._head)
        raise StoreError("journal worn out: appends keep failing")

    def _write(self, s, payload, n):
        rh = self._rh
        rh[0] = 0xFF
        _put_le(rh, 1, s, 6)
        rh[7] = n & 0xFF
        rh[8] = n >> 8
        _put_le(rh, 9, crc32(payload, crc32(self._rh_sl)), 4)
        sec = self._head * self._ss
        addr = sec + self._off + 1            # body first; the commit byte (offset 0) stays 0xFF
        self._program_body(addr, payload, n)
        if self._slot(sec, self._off, False) != _OPEN or self._sq != s or self._ln != n:
            return False
        self.dev.program(addr - 1, _ZERO1)    # the commit: one byte, after the verified body
        self._rd(addr - 1, self._hb1)
        return self._hb[0] == COMMITTED

    def _program_body(self, addr, payload, n):
        """Program rh[1:13] + payload at addr in page-bounded pieces through the staging buffer."""
        page = self.dev.page_size
        buf = self._buf
        bv = self._bufv
        rh = self._rh
        total = REC_HDR - 1 + n
        done = 0
        pv = memoryview(payload)
        while done < total:
            room = page - (addr + done) % page
            k = total - done
            if k > room:
                k = room
            if k > len(buf):
                k = len(buf)
            # fill bv[:k] with bytes done..done+k of (rh[1:13] + payload)
            j = 0
            while j < k and done + j < REC_HDR - 1:
                buf[j] = rh[1 + done + j]
                j += 1
            if j < k:
                p0 = done + j - (REC_HDR - 1)
                bv[j:k] = pv[p0:p0 + k - j]
            self.dev.program(addr + done, bv if k == len(bv) else bv[:k])
            done += k

    # --- reading -------------------------------------------------------------------------------------
    def records(self, since=0):
        """Yield (seq, payload) oldest to newest for seq >= since; corrupt slots are skipped and counted."""
        if self._head < 0:
            return
        ss = self._ss
        self._corrupt = 0
        last = -1
        sec = self._next_live(self._head)
        for _ in range(self._n):              # at most one lap, whatever the image holds
            if sec < 0:
                break
            nxt = self._next_live(sec) if sec != self._head else -1
            if since > 0 and nxt >= 0:
                nb = self._hbase_v if nxt == self._head else (
                    self._hbase if self._hdr(nxt) == _H_VALID else -1)
                if 0 <= nb <= since:
                    sec = nxt
                    continue          # every seq in sec is below the next sector's base
            addr = sec * ss
            off = SECTOR_HDR
            end = self._off if sec == self._head else ss
            while off < end:
                r = self._slot(addr, off, True)
                if r == _END:
                    break
                if r == _LOST:
                    self._corrupt += 1
                    break
                if r == _OK:
                    q = self._sq
                    if q > last:
                        last = q
                        if q >= since:
                            yield q, self._pl
                else:
                    self._corrupt += 1
                off += REC_HDR + self._ln
            sec = nxt

    def _next_live(self, sec):
        """The next sector holding records after sec in ring order (the head is last); -1 past the head."""
        st = self._state
        n = self._n
        for k in range(1, n + 1):
            i = (sec + k) % n
            s = st[i]
            if s == _LIVE or s == _DAMAGED or s == _WORN:
                return i
        return -1

    @property
    def last_seq(self):
        return self._last

    @property
    def next_seq(self):
        """The seq the next successful append will return (the nonce a sealer must use)."""
        return self._next

    def capacity(self, payload_size):
        """Records of payload_size bytes the ring always retains: all usable sectors but the one
        being recycled (the head sector adds up to one more sector's worth)."""
        per = (self._ss - SECTOR_HDR) // (REC_HDR + payload_size)
        usable = self._usable()
        return (usable - 1) * per if usable > 1 else 0

    def _usable(self):
        st = self._state
        u = 0
        for i in range(self._n):
            if st[i] != _RETIRED and st[i] != _WORN:
                u += 1
        return u

    def stats(self, payload_size=64):
        st = self._state
        ss = self._ss
        free = 0
        retired = worn = 0
        ec_max = ec_sum = ec_n = 0
        for i in range(self._n):
            s = st[i]
            if s == _FREE:
                free += ss - SECTOR_HDR
            elif s == _RETIRED:
                retired += 1
            elif s == _WORN:
                worn += 1
            if (s == _LIVE or s == _WORN) and self._hdr(i) == _H_VALID:
                ec_n += 1
                ec_sum += self._hec
                if self._hec > ec_max:
                    ec_max = self._hec
        if self._head >= 0 and self._open_ok:
            free += ss - self._off
        return {
            "records": self._count,
            "oldest_seq": self._tbase if self._count else 0,
            "last_seq": self._last,
            "next_seq": self._next,
            "free_bytes": free,
            "corrupt_skipped": self._corrupt,
            "mount_bytes_read": self.mount_bytes_read,
            "sectors": self._n,
            "usable_sectors": self._usable(),
            "retired_sectors": retired + worn,
            "max_payload": self.max_payload,
            "payload_size": payload_size,
            "capacity_records": self.capacity(payload_size),
            "record_bytes": REC_HDR + payload_size,
            "erase_count_max": ec_max,
            "erase_count_mean": ec_sum // ec_n if ec_n else 0,
        }

    # --- explicit format -----------------------------------------------------------------------------
    @staticmethod
    def format(dev):
        """Erase every sector that is not blank (explicit: the only way this module wipes anything)."""
        ss = dev.sector_size
        if ss < 256 or dev.size < 2 * ss or dev.size % ss:
            raise StoreError("journal needs at least 2 sectors of >= 256 bytes")
        for i in range(dev.size // ss):
            addr = i * ss
            if dev.read(addr, ss) != b"\xff" * ss:
                dev.erase_sector(addr)
                if dev.read(addr, ss) != b"\xff" * ss:
                    dev.program(addr, _ZEROS)       # worn out: leave it retired
