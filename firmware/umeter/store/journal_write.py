"""Journal revision 3: the write path (JOURNAL.md 2, 5, 6): append a record, open a sector.

Functions of the Journal j (they change j's own state: head, append point, next seq). Everything
programmed is read back; a program that does not take makes the journal worn (sticky, StoreError),
so a failing chip loses no more than the sector being written to. Nothing here allocates after the
first appends of each payload size (heap_lock() in the tests).
"""
from . import journal_layout as L
from . import journal_mount as M
from .errors import StoreError

_ZEROS = b"\x00" * L.HDR_LEN


def worn(j, why):
    j.worn = "journal worn out: " + why
    raise StoreError(j.worn)


def units_above(j, hi, lo, base_hi, base_lo):
    """(hi, lo) - base in seqs: a small int (callers keep it within a few sectors' worth)."""
    return (hi - base_hi) * L.HALF + lo - base_lo


def append(j, payload):
    n = len(payload)
    if n < 1 or n > j.max_payload:
        raise ValueError("payload must be 1..%d bytes" % j.max_payload)
    if j.worn:
        raise StoreError(j.worn)
    io = j.io
    make_room(j, n)
    hi, lo = j.nh, j.nl
    if hi >= L.HALF:
        raise StoreError("sequence numbers exhausted")
    rel = j.next_units
    sec = j.head * io.ss
    at = sec + j.ap
    rec = io.rec
    L.encode_record_header(rec, n, rel, io.pre, hi, lo, io.state)
    # 1. the header alone: no byte of the payload (ciphertext) leaves the MCU before it is on flash, so
    #    a cut that changed no bit reuses a seq under which nothing secret was sent (JOURNAL.md 2)
    io.program(at, rec)
    io.readinto(at, io.chk8)
    for k in range(L.REC_HDR):
        if io.chk[k] != rec[k]:
            worn(j, "a record header did not program in sector %d" % j.head)
    # 2. payload and pcrc (state continues from the hcrc), in page-bounded pieces
    L.crc_update(io.state, payload, 0, n)
    _program_body(io, at + L.REC_HDR, payload, n)
    # 3. read back: only a record that checks is acknowledged
    if io.probe(sec, j.ap, j.bh, j.bl, j.max_payload) != (n << 16) | rel:
        worn(j, "a record did not program in sector %d" % j.head)
    j.ap += L.extent(n)
    j.head_records += 1
    j.last_sec, j.last_hi, j.last_lo = j.head, hi, lo
    j.next_units = rel + 1
    j.set_next()
    return L.seq_int(hi, lo)


def make_room(j, n):
    """Open a sector (running on_drop, which may append) unless an n-byte record fits the head."""
    ext = L.extent(n)
    if j.head < 0 or j.closed() or j.ap + ext > j.room_end():
        if j.in_drop:
            raise StoreError("no room left for a record appended from on_drop")
        open_sector(j)
        if j.ap + ext > j.room_end():
            raise StoreError("record does not fit a sector")


def _program_body(io, addr, payload, n):
    """Program payload + io.state (the pcrc) at addr, never across a page, through the staging buffer."""
    page = io.page
    buf = io.buf
    total = n + L.REC_CRC
    done = 0
    while done < total:
        k = page - (addr + done) % page
        if k > total - done:
            k = total - done
        j = 0
        if done < n:
            j = n - done if n - done < k else k
            L.copy(buf, 0, payload, done, j)
        while j < k:
            buf[j] = io.state[done + j - n]
            j += 1
        io.program(addr + done, io.view(k))
        done += k


def write_headers(j, sec, hi, lo):
    """Primary header, then its backup copy; both read back (a torn primary is garbage mount tolerates
    in the head's successor; a valid primary is all mount needs)."""
    io = j.io
    a = sec * io.ss
    L.encode_header(io.hdr, hi, lo, io.state)
    for copy in range(2):
        at = a + copy * (io.ss - L.TRAILER)
        io.program(at, io.hdr14)
        io.readinto(at, io.chk14)
        for k in range(L.HDR_LEN):
            if io.chk[k] != io.hdr[k]:
                worn(j, "the header of sector %d did not program" % sec)


def retire(j, sec):
    io = j.io
    io.program(sec * io.ss, _ZEROS)
    io.read_header(sec * io.ss)
    j.kinds[sec] = M.K_RETIRED
    if L.count_bytes(io.hdr, L.HDR_LEN, 0) < 12:
        worn(j, "sector %d could not be retired" % sec)


def vouch(j, sec, k):
    """Raise sec's vouch counter to at least k zero bits (one byte program per changed byte)."""
    io = j.io
    a = sec * io.ss + io.ss - L.VOUCH_LEN
    if io.vouch_count(sec * io.ss) >= k:
        return
    old = io.chk
    new = io.pre                       # 10 bytes are enough for the bytes a step can change
    for i in range(L.VOUCH_LEN):
        z = k - 8 * i
        want = 0xFF if z <= 0 else (0 if z >= 8 else (0xFF << z) & 0xFF)
        if want != old[i]:
            new[0] = want & old[i]
            io.program(a + i, io.pre1)
    if io.vouch_count(sec * io.ss) < k:
        worn(j, "the vouch counter of sector %d did not program" % sec)


def _erase(j, sec):
    """Erase sec and check it; a sector that does not erase is retired (StoreError: one per append)."""
    io = j.io
    j.gen += 1
    io.dev.erase_sector(sec * io.ss)
    if not io.blank(sec * io.ss, io.ss):
        retire(j, sec)
        raise StoreError("journal worn out: sector %d did not erase (retired)" % sec)
    j.kinds[sec] = M.K_BLANK


def load_header(j, sec):
    """io.hdr = a live sector's header, the primary copy or else the backup (like a readinto)."""
    io = j.io
    io.read_header(sec * io.ss)
    if not L.header_ok(io.hdr, io.state):
        io.read_header(sec * io.ss + io.ss - L.TRAILER)


def _needed_vouch(j, sec):
    """Counter value with which sec vouches for every seq below the next one (JOURNAL.md 5)."""
    load_header(j, sec)
    d = units_above(j, j.nh, j.nl, L.get_hi(j.io.hdr, 4), L.get_lo(j.io.hdr, 4))
    k = (d + j.ms - 1) // j.ms
    return k if k > 1 else 1


def open_sector(j):
    """Give the journal a fresh head with base = next seq (JOURNAL.md 2.2)."""
    if j.nh >= L.HALF:
        raise StoreError("sequence numbers exhausted")
    kinds = j.kinds
    h = j.head
    if h < 0:
        v = M.successor(kinds, j.n, j.n - 1) if kinds[0] == M.K_RETIRED else 0
        if kinds[v] != M.K_BLANK or not j.io.blank(v * j.ss, j.ss):
            _erase(j, v)
        _new_head(j, v)
        return
    s = M.successor(kinds, j.n, h)
    if s < 0:
        raise StoreError("journal worn out: no usable sector left")
    if j.head_records == 0 and kinds[s] == M.K_LIVE and _reuse(j, h):
        return
    if kinds[s] == M.K_LIVE and j.on_drop is not None and j.vouch_k == 0 and j.ap <= j.io.end - j.reserve:
        _call_on_drop(j, s)
    if kinds[s] == M.K_BLANK and j.io.blank(s * j.ss, j.ss):
        _new_head(j, s)
        return
    k = _needed_vouch(j, h)
    vouch(j, h, k)
    j.vouch_k = k
    _erase(j, s)
    _new_head(j, s)


def _new_head(j, v):
    write_headers(j, v, j.nh, j.nl)
    j.kinds[v] = M.K_LIVE
    j.head, j.bh, j.bl = v, j.nh, j.nl
    j.ap = L.AREA0
    j.next_units = 0
    j.head_records = 0
    j.vouch_k = 0
    j.gen += 1


def _reuse(j, h):
    """The head holds no valid record and its successor holds records: erase the head itself rather
    than drop history for nothing (brown-out loops). Its predecessor p first vouches for every seq
    used so far; the head's magic is zeroed so no torn erase can make its old header valid again
    (JOURNAL.md 5.2)."""
    p = M.predecessor(j.kinds, j.n, h)
    if p < 0 or p == h or j.kinds[p] != M.K_LIVE:
        return False
    k = _needed_vouch(j, p)
    if k > L.VOUCH_MAX:
        return False                   # out of vouches: ordinary retention drops p instead
    vouch(j, p, k)
    io = j.io
    unmake(j, h)
    j.head = p                          # should this erase fail, p is the head mount will find
    load_header(j, p)
    j.bh, j.bl = L.get_hi(io.hdr, 4), L.get_lo(io.hdr, 4)
    j.next_units = units_above(j, j.nh, j.nl, j.bh, j.bl)     # the same next seq, from p's base
    j.vouch_k = k
    j.ap = io.end
    j.head_records = 0
    _erase(j, h)
    _new_head(j, h)
    return True


def unmake(j, sec):
    """Zero bytes 0-3 (format, magic) of both header copies of sec and read them back: no torn erase
    can make its old header valid again over a mix of its old bytes (JOURNAL.md 5, 6.1)."""
    io = j.io
    a = sec * io.ss
    for copy in range(2):
        at = a + copy * (io.ss - L.TRAILER)
        io.program(at, io.zero4)
        io.readinto(at, io.chk4)
        if io.chk[0] | io.chk[1] | io.chk[2] | io.chk[3]:
            worn(j, "the header of sector %d could not be unmade" % sec)
    j.kinds[sec] = M.K_DIRTY
    j.gen += 1


def drop_range(j, s):
    """(first, last): every seq the live sector s may hold, from its base to below the next one's."""
    load_header(j, s)
    first = L.seq_int(L.get_hi(j.io.hdr, 4), L.get_lo(j.io.hdr, 4))
    t = M.successor(j.kinds, j.n, s)
    if t == j.head or t < 0 or j.kinds[t] != M.K_LIVE:
        last = L.seq_int(j.bh, j.bl)
    else:
        load_header(j, t)
        last = L.seq_int(L.get_hi(j.io.hdr, 4), L.get_lo(j.io.hdr, 4))
    return first, last - 1


def _call_on_drop(j, s):
    """Tell the owner which seqs go before s is erased; it may append (into the head's reserve)."""
    first, last = drop_range(j, s)
    j.in_drop = True
    try:
        j.on_drop(first, last)
    finally:
        j.in_drop = False


# --- dropping by age (JOURNAL.md 6.1) ---------------------------------------------------------------------
def droppable(j):
    """The oldest live sector (the first live one after the head in ring order), or -1 when there is
    none but the head, or it holds the newest valid record."""
    h = j.head
    if h < 0:
        return -1
    sec = h
    for _ in range(j.n - 1):
        sec = (sec + 1) % j.n
        if j.kinds[sec] == M.K_LIVE:
            return -1 if sec == j.last_sec else sec
    return -1


def drop_oldest(j):
    """Drop the oldest live sector on purpose: on_drop first (its record goes into ordinary room, so
    the head's reserve stays for ring retention), then unmake and erase. (first, last) or None."""
    if j.worn:
        raise StoreError(j.worn)
    o = droppable(j)
    if o < 0:
        return None
    first, last = drop_range(j, o)
    if j.on_drop is not None:
        # room for one reserve-sized record below the reserve; opening a sector here may run ring
        # retention, which then drops o itself (with its own on_drop call)
        make_room(j, j.reserve - L.REC_HDR - L.REC_CRC if j.reserve > 16 else 1)
        if j.kinds[o] != M.K_LIVE or o == j.head:
            return first, last
        nh, nl = j.nh, j.nl
        _call_on_drop(j, o)
        if nh == j.nh and nl == j.nl:
            return None                 # nothing was sealed: an unproven drop is not made on purpose
        if droppable(j) != o:
            return None
    _clear_before(j, o)
    unmake(j, o)
    _erase(j, o)
    return first, last


def _clear_before(j, o):
    """Erase the unreadable sectors just before o (dirty or damaged: what a cut in an earlier drop left),
    farthest first: so a dirty sector is only ever followed by unreadable ones and then a live one
    (mount's rule, JOURNAL.md 3.1, 6.1). They are older than o and hold nothing that can be read."""
    p = far = o
    for _ in range(j.n - 1):
        p = (p - 1) % j.n
        k = j.kinds[p]
        if p == j.head or (k != M.K_DIRTY and k != M.K_DAMAGED and k != M.K_RETIRED):
            break
        if k != M.K_RETIRED:
            far = p
    while far != o:
        if j.kinds[far] != M.K_RETIRED:
            _erase(j, far)
        far = (far + 1) % j.n
