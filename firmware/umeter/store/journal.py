"""Journal: a power-loss-safe, wear-levelled record log on SPI NOR (DESIGN.md 3.3; format: JOURNAL.md,
revision 3).

    j = Journal(dev, on_drop=None)   # mount (never writes); an all-0xFF device is an empty journal
    seq = j.append(payload)          # durable once it returns; seqs strictly increase, never reused
    j.oldest_sector(), j.drop_oldest()   # retention by age: (first, last) of the oldest sector
    for seq, payload in j.records(since=0): ...     # re-entrant: each walk carries its own position
    j.last_seq, j.next_seq, j.max_payload, j.stats(payload_size=64), j.capacity(payload_size)
    Journal.format(dev)              # explicit wipe

Seqs are bounded by position: a record at unit u (byte offset 16 + 16 u) of a sector with base b has a
seq b + rel with rel <= u, consecutive from record to record; a new sector's base is the next seq, so a
sector's seqs lie in [b, b + max_slots) and below the next sector's base. on_drop(first_seq, last_seq)
is called before ring retention erases a sector holding records; it may append (small records go
into the head's reserve, see JOURNAL.md 6).
Modules: journal_layout (bytes), journal_io (buffers), journal_mount (mount), journal_write (append).
"""
from . import journal_io as IO
from . import journal_layout as L
from . import journal_mount as M
from . import journal_write as W
from .errors import StoreError

FORMAT = L.FORMAT
SECTOR_HDR = L.AREA0
SEQ_LIMIT = 1 << 48
max_slots = L.max_slots
DROP_RESERVE = 160      # bytes of each head kept for what on_drop appends: one sealed retention record
                        # (up to 148 bytes: the app's is 59 + 74 seal overhead with an anchor)


class Journal:
    def __init__(self, dev, on_drop=None, drop_reserve=DROP_RESERVE):
        ss = dev.sector_size
        if ss < 256 or dev.size < 2 * ss or dev.size % ss or ss % L.UNIT:
            raise StoreError("journal needs at least 2 sectors of >= 256 bytes")
        self.dev = dev
        self.io = io = IO.FlashIO(dev)
        self.ss = ss
        self.n = dev.size // ss
        self.ms = L.max_slots(ss)
        self.max_payload = L.max_payload(ss)
        self.on_drop = on_drop
        self.reserve = drop_reserve if on_drop is not None else 0
        self.in_drop = False
        self.worn = None
        self.gen = 0
        m = M.mount(io, self.n, self.max_payload)
        self.mount_bytes_read = io.reads
        self.kinds = m.kinds
        self.head = m.head
        self.bh, self.bl = m.base_hi, m.base_lo
        self.ap = m.ap
        self.next_units = m.next_units
        self.vouch_k = m.vouch
        self.head_records = m.head_records
        self.last_sec, self.last_hi, self.last_lo = m.last_sec, m.last_hi, m.last_lo
        self.corrupt = m.corrupt
        if self.head < 0:
            self.nh, self.nl = 0, 1
        else:
            self.set_next()

    # --- state the write path shares ---------------------------------------------------------------
    def closed(self):
        """The next seq does not fit the head: a record at unit u may carry base + u at most."""
        return (self.ap - L.AREA0) >> 4 < self.next_units

    def room_end(self):
        if self.in_drop or self.ap == L.AREA0:
            return self.io.end
        return self.io.end - self.reserve

    def set_next(self):
        lo = self.bl + self.next_units
        self.nh = self.bh + (lo >> 24)
        self.nl = lo & L.HALF_MASK

    # --- API -----------------------------------------------------------------------------------------
    def append(self, payload):
        return W.append(self, payload)

    def oldest_sector(self):
        """(first_seq, last_seq): every seq the oldest sector may hold, when drop_oldest() would drop
        it; None when it would not (no sector but the head, or the oldest holds the newest record).
        Its records are those of records(since=first_seq) up to last_seq (the oldest sector is walked
        first). Reads two sector headers."""
        o = W.droppable(self)
        return W.drop_range(self, o) if o >= 0 else None

    def drop_oldest(self):
        """Drop the oldest sector on purpose (retention by age, JOURNAL.md 6.1): never the head, never
        the sector holding the newest record. With on_drop set it is called first, as for ring
        retention, and the drop happens only if it appended a record (the retention proof). Returns
        (first_seq, last_seq) of what was dropped, or None. Power-safe: a cut leaves the sector either
        readable as before or in doubt (never read again), every other record untouched."""
        return W.drop_oldest(self)

    def make_room(self, n):
        """Make the head ready for an n-byte record and return the seq append will give it. With an
        on_drop callback, the drop (and what the callback appends) happens here, so a sealer that calls
        make_room(len(record)) instead of reading next_seq seals with the seq the record gets."""
        if n < 1 or n > self.max_payload:
            raise ValueError("payload must be 1..%d bytes" % self.max_payload)
        if self.worn:
            raise StoreError(self.worn)
        W.make_room(self, n)
        return self.next_seq

    @property
    def last_seq(self):
        return L.seq_int(self.last_hi, self.last_lo) if self.last_sec >= 0 else 0

    @property
    def next_seq(self):
        """The seq the next successful append will return (the nonce a sealer must use)."""
        return L.seq_int(self.nh, self.nl)

    def records(self, since=0):
        """Yield (seq, payload) oldest to newest for seq >= since; corrupt records are skipped and
        counted. Each walk keeps its own position: appends, stats() and other walks may run meanwhile;
        when a sector is recycled under it, the walk goes on from the oldest record after its last."""
        sh, sl = (since >> 24, since & L.HALF_MASK) if since > 0 else (0, 0)
        lh = ll = -1
        self.corrupt = 0
        while True:
            gen = self.gen
            restart = False
            head = self.head
            if head < 0:
                return
            sec = M.successor(self.kinds, self.n, head)
            if sec < 0:
                sec = head
            for _ in range(self.n):
                if self.kinds[sec] == M.K_LIVE:
                    for seq_hi, seq_lo, p in self._walk(sec, sh, sl, lh, ll, gen):
                        if p is None:
                            restart = True
                            break
                        lh, ll = seq_hi, seq_lo
                        yield L.seq_int(seq_hi, seq_lo), p
                    if restart or self.gen != gen:
                        restart = True
                        break
                if sec == head:
                    break
                sec = (sec + 1) % self.n
            if not restart:
                return
            if lh >= 0:
                sh, sl = lh + ((ll + 1) >> 24), (ll + 1) & L.HALF_MASK

    def _walk(self, sec, sh, sl, lh, ll, gen):
        """(seq_hi, seq_lo, payload) of one sector's valid records at or after (sh, sl) and after
        (lh, ll); (.., .., None) when the sector was recycled under the walk."""
        io = self.io
        addr = sec * self.ss
        io.read_header(addr)
        if not L.header_ok(io.hdr, io.state):
            io.read_header(addr + self.ss - L.TRAILER)
            if not L.header_ok(io.hdr, io.state):
                return
        bh, bl = L.get_hi(io.hdr, 4), L.get_lo(io.hdr, 4)
        off = L.AREA0
        in_bad = False
        while True:
            if self.gen != gen:
                yield 0, 0, None
                return
            stop = self.ap if sec == self.head else io.end
            if off + L.UNIT > stop:
                return
            r = io.header(addr, off, bh, bl, self.max_payload)
            if r > 0:
                n = r >> 16
                lo = bl + (r & 0xFFFF)
                hi = bh + (lo >> 24)
                lo &= L.HALF_MASK
                later = (hi > sh or (hi == sh and lo >= sl)) and (hi > lh or (hi == lh and lo > ll))
                p = io.payload(addr, off, n) if later else b""
                if p is not None:
                    in_bad = False
                    if later:
                        yield hi, lo, p
                    off += L.extent(n)
                    continue
            elif r == IO.BLANK:
                if sec != self.head and io.blank(addr + off, io.end - off):
                    return
                off += L.UNIT
                continue
            if not in_bad:
                self.corrupt += 1
                in_bad = True
            off += L.UNIT

    def capacity(self, payload_size):
        """Records of payload_size bytes the ring always retains: every usable sector but one."""
        per = (self.io.end - L.AREA0 - self.reserve) // L.extent(payload_size)
        u = self._usable()
        return (u - 1) * per if u > 1 else 0

    def _usable(self):
        u = 0
        for i in range(self.n):
            if self.kinds[i] != M.K_RETIRED:
                u += 1
        return u - (1 if self.worn else 0)

    def _census(self):
        """(records, oldest seq) from the sector headers alone: a sector before the head holds the seqs
        up to the next one's base, consecutive unless cuts burnt some, so this counts records exactly
        after clean runs and counts a burnt seq as a record otherwise (JOURNAL.md 9)."""
        head = self.head
        if head < 0:
            return 0, 0
        io = self.io
        count = 0
        oldest = 0
        prev_hi = prev_lo = -1
        sec = M.successor(self.kinds, self.n, head)
        if sec < 0:
            sec = head
        for _ in range(self.n):
            if self.kinds[sec] == M.K_LIVE:
                W.load_header(self, sec)
                bh, bl = L.get_hi(io.hdr, 4), L.get_lo(io.hdr, 4)
                if prev_hi >= 0:
                    count += W.units_above(self, bh, bl, prev_hi, prev_lo)
                elif sec != head or self.head_records:
                    oldest = L.seq_int(bh, bl)
                prev_hi, prev_lo = bh, bl
            if sec == head:
                break
            sec = (sec + 1) % self.n
        return count + self.head_records, oldest

    def stats(self, payload_size=64):
        count, oldest = self._census()
        kinds = self.kinds
        retired = free = 0
        for i in range(self.n):
            k = kinds[i]
            if k == M.K_RETIRED:
                retired += 1
            elif i != self.head and k != M.K_LIVE:
                free += self.io.end - L.AREA0 - self.reserve
        if self.head >= 0 and not self.worn and not self.closed():
            free += max(0, self.io.end - self.reserve - self.ap)
        return {
            "records": count,
            "oldest_seq": oldest,
            "last_seq": self.last_seq,
            "next_seq": self.next_seq,
            "free_bytes": free,
            "corrupt_skipped": self.corrupt,
            "mount_bytes_read": self.mount_bytes_read,
            "sectors": self.n,
            "usable_sectors": self._usable(),
            "retired_sectors": retired + (1 if self.worn else 0),
            "max_payload": self.max_payload,
            "payload_size": payload_size,
            "capacity_records": self.capacity(payload_size),
            "record_bytes": L.extent(payload_size),
            "worn": self.worn,
        }

    @staticmethod
    def format(dev):
        """Erase every sector that is not blank (explicit: the only way this module wipes anything)."""
        ss = dev.sector_size
        if ss < 256 or dev.size < 2 * ss or dev.size % ss:
            raise StoreError("journal needs at least 2 sectors of >= 256 bytes")
        ff = b"\xff" * ss
        for i in range(dev.size // ss):
            addr = i * ss
            if dev.read(addr, ss) != ff:
                dev.erase_sector(addr)
                if dev.read(addr, ss) != ff:
                    dev.program(addr, b"\x00" * L.HDR_LEN)      # worn out: leave it retired
