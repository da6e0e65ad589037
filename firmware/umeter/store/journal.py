"""Journal: a power-loss-safe, wear-levelled record log on SPI NOR (DESIGN.md 3.3, spec in JOURNAL.md).

    j = Journal(dev)                 # mount (an all-0xFF device is an empty journal); StoreError otherwise
    seq = j.append(payload)          # durable once it returns; seqs strictly increase, never reused
    for seq, payload in j.records(since=0): ...
    j.last_seq, j.next_seq, j.max_payload, j.stats(payload_size=64), j.capacity(payload_size)
    Journal.format(dev)              # explicit wipe

Sectors form a ring. Each used sector starts with a 48-byte header (format byte, 48-bit base sequence,
sequence gap, CRC-32, claim byte; then the newest committed seq at opening, erase count, CRC-32, worn
flag; then a unary window count). Records follow densely: a 13-byte record header (commit byte, 48-bit
seq, length, CRC-32 over seq+length+payload) then the payload. Slot i of a sector always uses seq
base+i. An append programs the commit byte to INTENT, then the body, reads it back, then programs the
commit byte to 0x00. So any started body shows on flash, and a slot torn by a power cut is voided in
place (its commit byte becomes a skip count) instead of closing the sector. Mount reads 15 bytes per
sector plus the head sector.
"""
from binascii import crc32

from .errors import StoreError

FORMAT = 0x4B           # format byte of a journal sector header: layout revision 2 (revision 1 was 0x4A)
REVISION = 2            # trailer byte: layout revision 2 (JOURNAL.md)
SECTOR_HDR = 16         # bytes reserved at the start of every sector: records start here
HDR_READ = 15           # bytes 0-14 (format, base, gap, crc) are read for every sector at mount
CLAIM_AT = 15           # claim byte: programmed to 0x00 before the successor sector is erased
TRAILER = 40            # bytes reserved at the end of every sector (offsets below are from its start)
TR_DATA = 9             # 0-8 stay 0xFF: a slot walk probing into the trailer reads an impossible length
TR_LEN = 16             # 9-14 last, 15-18 erase count, 19 revision, 20-23 crc, 24 worn: read for the head
TR_WORN = 24            # worn flag: programmed to 0x00 when a record program failed in the sector
TR_EPOCH = 25           # 25-39: window count in unary (zero bits), see JOURNAL.md 4.2
EPOCH_LEN = 15
EPOCH_MAX = 8 * EPOCH_LEN
REC_HDR = 13            # commit(1) seq(6) length(2) crc(4)
COMMITTED = 0x00
INTENT = 0xFE           # commit byte programmed before the body: from then on the slot's seq is used
SKIP_UNIT = 16          # a void slot's commit byte c (even) means: the next slot starts 16 * c bytes further
SKIP_MAX = 0xFC
SEQ_LIMIT = 1 << 48     # a 48-bit sequence number never wraps: append refuses at the limit
WINDOW = 1 << 16        # seqs a claimed sector vouches for per window (see JOURNAL.md 4.2)

# sector states (RAM only, one byte per sector)
_FREE = 0               # blank or garbage: erased/blank-checked before use
_LIVE = 1               # valid header
_DAMAGED = 2            # header unreadable but holds valid records (base taken from its first record)
_RETIRED = 3            # worn out, never used again (persistent: zeroed header)
_WORN = 4               # live, but a program failed in it: retired when the ring reaches it

# slot results
_OK = 0                 # committed, CRC good
_OPEN = 1               # CRC good but not committed (cut before or during the commit): seq burnt
_BAD = 2                # committed, then damaged (CRC bad); length plausible so the walk goes on
_LOST = 3               # committed, length implausible: the rest of the sector cannot be parsed
_END = 4                # blank record header: end of the sector's records
_TORN = 5               # body torn by a power cut (CRC bad, commit 0xFF): the last slot written
_SKIP = 6               # void slot (a torn slot voided, or a burnt seq): the next slot is 16 * c further

# header results
_H_VALID = 0
_H_BLANK = 1
_H_RETIRED = 2
_H_BAD = 3

_FF13 = b"\xff" * REC_HDR
_ZERO1 = b"\x00"
_INTENT1 = b"\xfe"
_ZEROS = b"\x00" * HDR_READ


def _put_le(buf, at, value, n):
    for k in range(n):
        buf[at + k] = (value >> (8 * k)) & 0xFF


def _get_le48(buf, at):
    return _get_le32(buf, at) | (buf[at + 4] << 32) | (buf[at + 5] << 40)


def _get_le32(buf, at):
    return buf[at] | (buf[at + 1] << 8) | (buf[at + 2] << 16) | (buf[at + 3] << 24)


def max_slots(sector_size):
    """The most record slots one sector can hold (1-byte payloads): how far a sector's seqs reach."""
    return (sector_size - TRAILER - SECTOR_HDR) // (REC_HDR + 1)


class Journal:
    def __init__(self, dev):
        ss = dev.sector_size
        if ss < 256 or dev.size < 2 * ss or dev.size % ss:
            raise StoreError("journal needs at least 2 sectors of >= 256 bytes")
        self.dev = dev
        self._ss = ss
        self._end = ss - TRAILER                # records end here
        self._tr = ss - TRAILER + TR_DATA       # trailer data, from the start of a sector
        self._n = dev.size // ss
        self.max_payload = min(self._end - SECTOR_HDR - REC_HDR, 0xFFFF)
        self._max_slots = max_slots(ss)
        self._state = bytearray(self._n)
        self._hb = bytearray(SECTOR_HDR)
        self._hbv = memoryview(self._hb)
        self._xb = bytearray(TR_LEN)
        self._xbv = memoryview(self._xb)
        self._rh = bytearray(REC_HDR)
        self._rhv = memoryview(self._rh)
        # fixed views, made once: slicing per record would allocate
        self._rh_sl = self._rhv[1:9]            # seq + length: the CRC's header part
        self._hb1 = self._hbv[:1]
        self._hb2 = self._hbv[1:2]
        self._hb11 = self._hbv[:11]
        self._hb15 = self._hbv[:HDR_READ]
        self._xb_crc = self._xbv[:11]           # last + erase count + revision: the trailer CRC's span
        self._xb_prog = self._xbv[:15]          # what opening a sector programs into the trailer
        chunk = dev.page_size if dev.page_size <= ss else ss
        self._buf = bytearray(chunk)
        self._bufv = memoryview(self._buf)
        self._ep = self._bufv[:EPOCH_LEN]
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

    def _last_used(self, addr, off, end=0):
        """Offset just past the last non-0xFF byte of the record area at addr, looking back from end
        (default: the end of the record area) down to off."""
        buf = self._buf
        size = len(buf)
        if not end:
            end = self._end
        while end > off:
            start = end - size if end - size > off else off
            mv = self._bufv if end - start == size else self._bufv[:end - start]
            self._rd(addr + start, mv)
            for k in range(end - start - 1, -1, -1):
                if buf[k] != 0xFF:
                    return start + k + 1
            end = start
        return off

    def _byte(self, addr):
        self._rd(addr, self._hb1)
        return self._hb[0]

    # --- sector headers ------------------------------------------------------------------------------
    def _hdr(self, sec):
        """Read sector sec's main header; on _H_VALID sets self._hbase and self._hgap."""
        hb = self._hb
        self._rd(sec * self._ss, self._hb15)
        if hb[0] == FORMAT and crc32(self._hb11) == _get_le32(hb, 11):
            self._hbase = _get_le48(hb, 1)
            self._hgap = _get_le32(hb, 7)
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

    def _ext(self, sec):
        """Read sec's claim byte and trailer: sets self._xclaim and self._xworn; on a good CRC (returns
        True) also self._xlast and self._xec."""
        xb = self._xb
        a = sec * self._ss
        self._xclaim = self._byte(a + CLAIM_AT) != 0xFF
        self._rd(a + self._tr, self._xbv)
        self._xworn = xb[TR_WORN - TR_DATA] != 0xFF
        if xb[10] != REVISION or crc32(self._xb_crc) != _get_le32(xb, 11):
            return False
        self._xlast = _get_le48(xb, 0)
        self._xec = _get_le32(xb, 6)
        return True

    def _write_hdr(self, sec, base, gap, last, ec):
        """Trailer first, then the main header: a valid main header implies a complete trailer."""
        xb = self._xb
        _put_le(xb, 0, last, 6)
        _put_le(xb, 6, ec if ec < 0xFFFFFFFF else 0xFFFFFFFF, 4)
        xb[10] = REVISION
        _put_le(xb, 11, crc32(self._xb_crc), 4)
        addr = sec * self._ss
        self.dev.program(addr + self._tr, self._xb_prog)
        hb = self._hb
        hb[0] = FORMAT
        _put_le(hb, 1, base, 6)
        _put_le(hb, 7, gap if gap < 0xFFFFFFFF else 0xFFFFFFFF, 4)
        _put_le(hb, 11, crc32(self._hb11), 4)
        self.dev.program(addr, self._hb15)
        return (self._hdr(sec) == _H_VALID and self._hbase == base and self._ext(sec)
                and self._xlast == last and not self._xclaim)

    def _retire(self, sec):
        """Zero the header (repeated: a worn cell may need several tries) and never use sec again."""
        self._state[sec] = _RETIRED
        for _ in range(4):
            self.dev.program(sec * self._ss, _ZEROS)
            if self._hdr(sec) == _H_RETIRED:
                return

    def _claim_sec(self, sec):
        """Program sec's claim byte (once): from now on mount treats sec's successor as in doubt."""
        a = sec * self._ss + CLAIM_AT
        if self._byte(a) == 0xFF:
            self.dev.program(a, _ZERO1)

    def _epochs(self, sec):
        """Windows sec vouches for: the zero bits of its window count field."""
        ev = self._ep
        self._rd(sec * self._ss + self._end + TR_EPOCH, ev)
        z = 0
        for k in range(EPOCH_LEN):
            b = ev[k]
            if b != 0xFF:
                for i in range(8):
                    if not (b >> i) & 1:
                        z += 1
        return z

    def _vouch(self, sec, base):
        """Claim sec (base: its base) and make it vouch for every seq used so far, i.e. below
        self._next: e windows cover seqs below base + max_slots + e * WINDOW. Mount of a claimed head
        jumps to that bound, so a successor destroyed by a cut never has its seqs handed out again.
        Called before the head is erased in place or retired, the only ways a sector that used seqs
        loses its header while its predecessor is still there."""
        self._claim_sec(sec)
        e = self._epochs(sec)
        while self._next > base + self._max_slots + e * WINDOW:
            if e >= EPOCH_MAX:
                return False
            a = sec * self._ss + self._end + TR_EPOCH + e // 8
            self._hb[1] = (0xFF << (e % 8 + 1)) & 0xFF      # clear one more bit, lowest first
            self.dev.program(a, self._hb2)
            n = self._epochs(sec)
            if n <= e:
                return False
            e = n
        return True

    # --- record slots --------------------------------------------------------------------------------
    def _slot(self, addr, off, with_payload):
        """Examine the record slot at sector address addr + off. Sets self._adv (bytes to the next
        slot, for the non-final results), self._sq and self._ln (and self._pl when with_payload)."""
        if off + REC_HDR > self._end:
            return _END
        rh = self._rh
        self._rd(addr + off, self._rhv)
        if rh == _FF13:
            return _END
        c = rh[0]
        n = rh[7] | (rh[8] << 8)
        if n < 1 or n > self.max_payload or off + REC_HDR + n > self._end:
            return self._uncounted(c, _LOST)
        self._ln = n
        self._adv = REC_HDR + n
        self._sq = _get_le48(rh, 1)
        crc = crc32(self._rh_sl)
        if with_payload:
            self._pl = self._read(addr + off + REC_HDR, n)
            crc = crc32(self._pl, crc)
        else:
            crc = self._crc_range(addr + off + REC_HDR, n, crc)
        if crc != _get_le32(rh, 9) or not self._sq:
            return self._uncounted(c, _BAD)
        return _OK if c == COMMITTED else _OPEN

    def _uncounted(self, c, committed_result):
        """Classify a slot whose body does not check, by its commit byte (JOURNAL.md 1.2)."""
        if c == INTENT or c == 0xFF:
            return _TORN
        if c == COMMITTED or c & 1:
            return committed_result
        self._adv = SKIP_UNIT * c
        return _SKIP

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
        head = pred = -1
        hbase = pbase = -1
        hgap = 0
        t1 = t2 = -1            # the two oldest live sectors, their bases and gaps
        b1 = b2 = g1 = g2 = 0
        gsum = 0
        retired = 0
        tie = False             # another sector has the head's base: which one went on is unknown
        for i in range(n):
            k = self._hdr(i)
            if k == _H_VALID:
                base, gap = self._hbase, self._hgap
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
                base, gap = self._sq, 0
                st[i] = _DAMAGED
            gsum += gap
            if base > hbase:
                head, hbase, hgap, pred, pbase = i, base, gap, head, hbase
                tie = False
            elif base == hbase:
                tie = True
                pred, pbase = i, base
            elif base > pbase:
                pred, pbase = i, base
            if t1 < 0 or base < b1:
                t2, b2, g2 = t1, b1, g1
                t1, b1, g1 = i, base, gap
            elif t2 < 0 or base < b2:
                t2, b2, g2 = i, base, gap
        self._head = head
        self._pred, self._pbase = pred, pbase
        self._corrupt = 0
        if head < 0:
            if not retired:
                self._check_blank()
            self._empty()
            self.mount_bytes_read = self._reads
            return
        xok = self._ext(head)
        self._claimed = self._xclaim
        xlast = self._xlast if xok else -1
        self._hec_v = self._xec if xok else 0
        if self._xworn:
            st[head] = _WORN
        # Claimed successor: its erase had begun, so whatever it still holds is dropped (retention).
        if self._claimed:
            v = self._succ(head)
            if v != head and (st[v] == _LIVE or st[v] == _DAMAGED):
                st[v] = _FREE       # when v is not the oldest the image is inconsistent: counts approximate
                if v == t1:
                    gsum -= g1
                    t1, b1, g1 = t2, b2, g2
                if v == pred:
                    self._pred = -1
        self._tail, self._tbase = t1, b1
        # Records before the head: bases and gaps telescope (JOURNAL.md 4.3).
        count = hbase - b1 - (gsum - g1) if head != t1 else 0
        self._hbase_v, self._hgap_v = hbase, hgap
        # A valid header implies a complete trailer (written first): a bad one, like a tie for the top
        # base, means the head was damaged, so its walk cannot tell which seqs it used.
        self._scan_head(count if count > 0 else 0, xlast, tie or not xok)
        if self._claimed:
            # The successor was being erased or opened: it may have been a sector this one vouched for
            # (JOURNAL.md 4.2) whose header is gone, with seqs used up to the vouched bound.
            self._open_ok = False
            self._repair = 0
            top = hbase + self._max_slots + self._epochs(head) * WINDOW
            if self._next < top:
                self._next = top
        self.mount_bytes_read = self._reads

    def _check_blank(self):
        """No journal sector found: accept only an erased device (a torn first header and trailer
        are tolerated)."""
        ss = self._ss
        for i in range(self._n):
            if self._state[i] != _RETIRED and not self._blank(i * ss + SECTOR_HDR, self._tr - SECTOR_HDR):
                raise StoreError("not a journal: sector %d holds foreign data (use Journal.format)" % i)

    def _empty(self):
        self._tail = -1
        self._tbase = 0
        self._count = 0
        self._next = 1
        self._last = 0
        self._off = self._ss
        self._open_ok = False
        self._hclean = False
        self._hcount = 0
        self._claimed = False
        self._repair = 0
        self._hbase_v = self._hgap_v = self._hec_v = 0

    def _scan_head(self, before, xlast, suspect):
        """Walk the head's slots (bounded by the sector). Every slot used one seq, in order, so the walk
        knows every seq the sector has used, even those of torn slots."""
        ss = self._ss
        head = self._head
        addr = head * ss
        base = self._hbase_v
        off = SECTOR_HDR
        count = 0
        last_ok = 0
        expected = base
        damaged = suspect or (self._state[head] != _LIVE and self._state[head] != _WORN)
        skip_at = 0
        self._repair = 0
        while True:
            r = self._slot(addr, off, False)
            if r == _END:
                if not damaged:
                    # Appends go on here, so the rest must be erased: a walk after them would take
                    # anything left there for records of theirs (only damage or tampering leaves any).
                    probe = off + REC_HDR if off + REC_HDR <= self._end else off    # read blank
                    if self._last_used(addr, probe) > probe:
                        damaged = True
                    elif skip_at and self._check_last_skip(addr, skip_at, min(off, self._end)):
                        off = skip_at + SKIP_UNIT * self._repair_k
                break
            if r == _TORN or r == _LOST:
                self._corrupt += 1
                if r == _TORN and not damaged:
                    # The cut tore this body: it is the last thing written. Appends resume after its
                    # last programmed byte, once the slot is voided by its skip byte.
                    expected += 1
                    k = self._skip_for(addr, off)
                    self._repair = off
                    self._repair_k = k
                    off += SKIP_UNIT * k
                else:
                    damaged = True
                break
            skip_at = 0
            if r == _SKIP:
                if not damaged:
                    expected += 1
                    skip_at = off
            elif r == _BAD:
                damaged = True
                self._corrupt += 1
            else:
                if self._sq != expected:
                    damaged = True
                if r == _OK:
                    if self._sq > last_ok:
                        count += 1
                        last_ok = self._sq
                else:
                    self._corrupt += 1
                expected += 1
            off += self._adv
        self._hcount = count
        self._count = before + count
        self._off = off
        self._hclean = not damaged
        self._open_ok = not damaged and off + REC_HDR + 1 <= self._end and self._state[head] == _LIVE
        if self._repair and (self._repair_k > SKIP_MAX or not self._open_ok):
            self._repair = 0
            self._open_ok = False           # no room after the torn slot: the sector is done
        if damaged:
            # A damaged head may hide seqs: skip past every seq any of its slots could carry.
            self._next = base + self._max_slots
            if self._next <= last_ok:
                self._next = last_ok + 1
        else:
            self._next = expected           # every slot with its intent byte programmed used its seq
            if not self._open_ok and self._next <= base:
                # The head is left as it is for a new sector, whose base must be above it: two
                # sectors with one base would make the next mount pick either as the head.
                self._next = base + 1
        if count:
            self._last = last_ok
        elif not self._count:
            self._last = 0
        elif 0 <= xlast < base and not damaged:
            self._last = xlast                  # (a record before the head is below its base)
        else:
            self._last = self._last_back()

    def _check_last_skip(self, addr, at, end):
        """The skip byte just before the end may itself be torn (bits still 1: a jump too long).
        Recompute it from the bytes it covers (up to end: erased from there on); if shorter, schedule
        the re-program (programming the right value over a torn one gives exactly the right value).
        True when scheduled."""
        k = self._skip_for(addr, at, end)
        if k < self._byte(addr + at):
            self._repair = at
            self._repair_k = k
            return True
        return False

    def _skip_for(self, addr, at, end=0):
        """Even skip count covering the slot at `at` up to the last programmed byte of the sector (or
        before end)."""
        u = (self._last_used(addr, at, end) - at + 2 * SKIP_UNIT - 1) // (2 * SKIP_UNIT)
        return 2 * u if u > 0 else 2

    def _last_back(self):
        """Seq of the newest committed record, walking back from the head sector by sector (only when
        the head holds none and its header extension cannot tell: a damaged header)."""
        sec = self._head
        corrupt = self._corrupt                 # this walk is not the one stats() reports
        for _ in range(self._n):
            last = 0
            top = self._next if sec == self._head else self._hbase_v
            for q, _ in self._walk(sec, 0, False):
                if q < top:
                    last = q
            if last:
                self._corrupt = corrupt
                return last
            sec = self._prev_live(sec)
            if sec < 0 or sec == self._head:
                break
        self._corrupt = corrupt
        return 0

    def _prev_live(self, sec):
        st = self._state
        n = self._n
        for k in range(1, n):
            i = (sec - k) % n
            s = st[i]
            if s == _LIVE or s == _DAMAGED or s == _WORN:
                return i
        return -1

    # --- ring maintenance ----------------------------------------------------------------------------
    def _claim(self):
        if not self._claimed and self._head >= 0:
            self._claim_sec(self._head)
            self._claimed = True

    def _drop(self, sec):
        """Ring retention: sec's records are gone; move the tail and the record count on."""
        st = self._state
        st[sec] = _FREE
        if sec == self._pred:
            self._pred = -1
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
            self._last = 0
            return
        if nxt == self._head:
            nb, ng = self._hbase_v, self._hgap_v
        elif self._hdr(nxt) == _H_VALID:
            nb, ng = self._hbase, self._hgap
        else:
            nb, ng = self._tbase, 0       # damaged header: count becomes approximate
        self._count -= nb - ng - self._tbase
        if self._count <= 0:
            self._count = 0
            self._last = 0                # the newest record was in the dropped sector
        self._tail, self._tbase = nxt, nb

    def _can_reuse(self):
        """A head without committed records is erased and reopened in place rather than left for its
        successor, when leaving it would drop records: a brown-out loop then never eats the history."""
        h = self._head
        if h < 0 or self._pred < 0 or self._pred == h or self._hcount or not self._hclean:
            return False
        if self._state[h] != _LIVE or self._state[self._pred] == _FREE:
            return False
        v = self._succ(h)
        return v >= 0 and v != h and self._state[v] != _FREE

    def _reuse(self):
        h = self._head
        ss = self._ss
        # If this erase or the header after it is cut, mount sees the predecessor as the head with its
        # claim byte set and jumps past every seq this sector could have burnt (JOURNAL.md 4.2).
        if not self._vouch(self._pred, self._pbase):
            return False
        # Unmake the header before the erase: a torn erase must never leave it valid over a random mix
        # of old slots, which a walk could take for a sector that burnt fewer seqs than it did.
        self.dev.program(h * ss, _ZERO1)
        ec = self._hec_v + 1
        self.dev.erase_sector(h * ss)
        base = self._next
        gap = self._hgap_v + (base - self._hbase_v)
        if not self._blank(h * ss, ss) or not self._write_hdr(h, base, gap, self._last, ec):
            self._retire(h)
            return False
        self._set_head(h, base, gap, ec)
        if self._tail == h:
            self._tbase = base
        return True

    def _set_head(self, sec, base, gap, ec):
        self._state[sec] = _LIVE
        self._head = sec
        self._hbase_v, self._hgap_v, self._hec_v = base, gap, ec
        self._hcount = 0
        self._off = SECTOR_HDR
        self._open_ok = True
        self._hclean = True
        self._claimed = False
        self._repair = 0

    def _open_sector(self):
        st = self._state
        ss = self._ss
        h = self._head
        if self._can_reuse() and self._reuse():
            return
        if h >= 0 and st[h] == _RETIRED and self._tail == h:
            self._tail = -1
        cand = self._succ(h)
        for _ in range(self._n):
            if cand < 0 or cand == h:
                raise StoreError("journal worn out: no usable sector left")
            ec = self._hec_v
            s = st[cand]
            if s == _FREE:
                dirty = not self._blank(cand * ss, ss)
                if dirty and self._hdr(cand) == _H_VALID and self._ext(cand):
                    ec = self._xec
            else:
                self._claim()
                worn = s == _WORN
                if self._hdr(cand) == _H_VALID:
                    if self._ext(cand):
                        ec = self._xec
                    worn = worn or self._xworn
                self._drop(cand)
                if worn:
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
            if h < 0:
                gap = 0
            elif st[h] == _RETIRED:
                gap = base - self._hbase_v + self._hgap_v   # relative to the retired head's predecessor
            else:
                gap = base - self._hbase_v - self._hcount
            if gap < 0:
                gap = 0
            if not self._write_hdr(cand, base, gap, self._last, ec):
                self._retire(cand)
                cand = self._succ(cand)
                continue
            if h >= 0 and st[h] != _RETIRED:
                if st[h] == _DAMAGED:
                    st[h] = _LIVE           # a damaged head is just another old sector now
                self._pred, self._pbase = h, self._hbase_v
            if self._tail < 0:
                self._tail, self._tbase = cand, base
            self._set_head(cand, base, gap, ec)
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
        for _ in range(self._n + 2):
            if self._head < 0 or not self._open_ok or self._off + need > self._end:
                self._open_sector()
            if self._repair:
                # the torn slot becomes void, so walks jump over its garbage to where appends resume
                if not self._void(self._repair, self._repair_k):
                    self._worn_head()
                    continue
                self._repair = 0
            if self._write(s, payload, n):
                self._off += need
                self._hcount += 1
                self._count += 1
                self._next = s + 1
                self._last = s
                return s
            # The chip did not take the bits: that sector is worn. Same seq and payload go to a fresh
            # sector (same nonce, same plaintext: nothing new is revealed).
            self._worn_head()
        raise StoreError("journal worn out: appends keep failing")

    def _worn_head(self):
        h = self._head
        self._open_ok = False
        self._repair = 0
        if self._hcount:
            # its committed records stay readable; the flag makes the ring retire it, also after a reboot
            self._state[h] = _WORN
            self.dev.program(h * self._ss + self._end + TR_WORN, _ZERO1)
        else:
            # Nothing committed in it: retire it now. It may hold bytes of burnt seqs, so claim its
            # predecessor first: a cut before the next header then makes mount jump past them.
            if self._pred >= 0:
                self._vouch(self._pred, self._pbase)
            self._retire(h)

    def _void(self, off, k):
        """Program the torn slot's commit byte (INTENT or 0xFF) with skip count k and check it (a torn
        skip byte only keeps extra 1-bits: a longer jump into erased space, fixed at the next mount)."""
        at = self._head * self._ss + off
        self._hb[1] = k
        self.dev.program(at, self._hb2)
        return self._byte(at) == k

    def _write(self, s, payload, n):
        rh = self._rh
        rh[0] = 0xFF
        _put_le(rh, 1, s, 6)
        rh[7] = n & 0xFF
        rh[8] = n >> 8
        _put_le(rh, 9, crc32(payload, crc32(self._rh_sl)), 4)
        sec = self._head * self._ss
        addr = sec + self._off + 1
        # The intent first: a cut in the body program, even one that changed no bit, leaves a slot
        # that visibly used seq s, so s is never handed out again (it is the sealer's nonce).
        self.dev.program(addr - 1, _INTENT1)
        self._program_body(addr, payload, n)
        if self._slot(sec, self._off, False) != _OPEN or self._sq != s or self._ln != n:
            return False
        self.dev.program(addr - 1, _ZERO1)    # the commit: one byte, after the verified body
        return self._byte(addr - 1) == COMMITTED

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
            # A sector holds seqs below the next one's base, the head below next_seq: what an
            # adversarial image stores above that is never returned (nor taken as last_seq), so every
            # record returned is below next_seq and an append always lands after it.
            top = self._next if sec == self._head else self._hbase_v
            for q, p in self._walk(sec, since, True):
                if last < q < top:
                    last = q
                    yield q, p
            sec = nxt

    def _walk(self, sec, since, with_payload):
        """Committed records of one sector with seq >= since, in slot order (seqs not checked here)."""
        addr = sec * self._ss
        off = SECTOR_HDR
        end = self._off if sec == self._head else self._end
        while off < end:
            r = self._slot(addr, off, with_payload)
            if r == _END:
                break
            if r == _OK:
                if self._sq >= since:
                    yield self._sq, (self._pl if with_payload else None)
            elif r != _SKIP:
                self._corrupt += 1
                if r == _LOST or r == _TORN:
                    break
            off += self._adv

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
        per = (self._end - SECTOR_HDR) // (REC_HDR + payload_size)
        usable = self._usable()
        return (usable - 1) * per if usable > 1 else 0

    def _usable(self):
        st = self._state
        u = 0
        for i in range(self._n):
            if st[i] != _RETIRED and st[i] != _WORN:
                u += 1
        return u

    def _oldest(self):
        """The seq of the oldest slot that holds (or held) a committed record: the tail's base plus the
        slots a power cut can leave before it (voids, uncommitted and torn slots)."""
        sec = self._tail
        for _ in range(self._n):
            if sec < 0:
                return 0
            if sec == self._head:
                base = self._hbase_v
            elif self._hdr(sec) == _H_VALID:
                base = self._hbase
            else:
                return self._tbase
            addr = sec * self._ss
            off = SECTOR_HDR
            end = self._off if sec == self._head else self._end
            while off < end:
                r = self._slot(addr, off, False)
                if r == _END or r == _TORN:
                    break
                # a cut leaves even commit bytes only (INTENT, or it partly cleared): odd is tampering
                if r != _SKIP and (r != _OPEN or self._rh[0] & 1):
                    return base
                base += 1
                off += self._adv
            if sec == self._head:
                return 0
            sec = self._next_live(sec)
        return 0

    def stats(self, payload_size=64):
        st = self._state
        free = 0
        retired = worn = 0
        ec_max = ec_sum = ec_n = 0
        for i in range(self._n):
            s = st[i]
            if s == _FREE:
                free += self._end - SECTOR_HDR
            elif s == _RETIRED:
                retired += 1
            if (s == _LIVE or s == _WORN) and self._hdr(i) == _H_VALID:
                xok = self._ext(i)
                if self._xworn and i != self._head:
                    st[i] = s = _WORN          # flagged on flash by an earlier boot
                if xok:
                    ec_n += 1
                    ec_sum += self._xec
                    if self._xec > ec_max:
                        ec_max = self._xec
            if s == _WORN:
                worn += 1
        if self._head >= 0 and self._open_ok:
            free += self._end - self._off
        corrupt = self._corrupt
        oldest = self._oldest() if self._count else 0
        self._corrupt = corrupt
        return {
            "records": self._count,
            "oldest_seq": oldest,
            "last_seq": self._last,
            "next_seq": self._next,
            "free_bytes": free,
            "corrupt_skipped": corrupt,
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
