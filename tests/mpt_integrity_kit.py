# Helpers for tests/mpt_app_integrity*.py: a small test board (6-sector journal so the ring wraps in a
# few hundred records), flash surgery with a clip (sector images, bit flips with the journal's CRC
# recomputed), keystore damage and a resynchronising reader of what the meter sealed.
from app_boards import SampleBoard
from umeter import records
from umeter.crypto import SealError
from umeter.crypto.seal import Opener
from umeter.store import journal_layout as L

SS = 4096
JOURNAL_SECTORS = 6
STATE_BASE = JOURNAL_SECTORS * SS
STATE_SIZE = 4 * SS
OTHER_KEY = bytes(range(100, 132))


class SmallBoard(SampleBoard):
    PARTITIONS = [("journal", JOURNAL_SECTORS * SS), ("state", STATE_SIZE), ("ota", None)]
    CHECKPOINT_S = 2
    KEY_STORAGE = "simulated"

    def __init__(self, directory, flash=None, provision=True, key=None):
        import os

        try:
            os.mkdir(directory)
        except OSError:
            pass
        SampleBoard.__init__(self, directory, flash=flash, provision=provision and key is None)
        if key is not None and not self.ks.provisioned:
            self.ks.provision(key)


def boot(board):
    """The next boot on the same flash and internal storage (the keystore is opened again)."""
    from umeter.app import Meter

    return Meter(SmallBoard(board.dir, flash=board.dev, provision=False))


def advance(m, checkpoints, samples=2000):
    """Meter a little, then checkpoint, `checkpoints` times."""
    for _ in range(checkpoints):
        m.run_samples(samples)
        m.checkpoint()


def regs(m):
    return m.engine.registers()


def position(m):
    hw = m.keystore.high_water()
    return hw.position if hw is not None else (0, 0)


def not_below(now, before):
    for code, value in before.items():
        assert now[code] >= value, (code, now[code], value)


# --- flash surgery -------------------------------------------------------------------------------------
def image(dev, base=0, size=None):
    return bytearray(dev.read(base, dev.size - base if size is None else size))


def put(dev, base, data):
    """Write data over [base, base + len) as a clip would: erase each sector, program its bytes."""
    ff = b"\xff" * 256
    for s in range(0, len(data), SS):
        dev.erase_sector(base + s)
        for p in range(s, min(s + SS, len(data)), 256):
            chunk = bytes(data[p:p + 256])
            if chunk != ff[:len(chunk)]:
                dev.program(base + p, chunk)


def erase(dev, base, size):
    for a in range(base, base + size, SS):
        dev.erase_sector(a)


def where(dev, record):
    """Flash address of a record's payload (the sealed bytes) in the journal partition."""
    img = bytes(dev.read(0, STATE_BASE))
    at = img.find(bytes(record))
    assert at >= 0
    return at


def flip(dev, record, bit=3, at=None):
    """Flip one bit in the middle of a stored record and recompute its payload CRC (state continues
    from the record header's hcrc, JOURNAL.md 1): the journal still reads the altered record."""
    a = where(dev, record)
    sector = a - a % SS
    img = image(dev, sector, SS)
    o = a - sector
    n = len(record)
    i = o + (n // 2 if at is None else at)
    img[i] ^= 1 << bit
    state = bytearray(img[o - 4:o])
    L.crc_update(state, img, o, n)
    img[o + n:o + n + 4] = state
    put(dev, sector, img)


def sector_of(dev, record):
    a = where(dev, record)
    return a - a % SS


# --- what the meter sealed --------------------------------------------------------------------------------
def opened(m, ks=None):
    """[(seq, type, fields)] of every record that verifies, resynchronising after each break."""
    op = Opener(ks or m.keystore)
    out = []
    for seq, rec in m.journal.records():
        try:
            p = op.open(seq, rec)
        except SealError:
            op.reset()
            try:
                p = op.open(seq, rec)
            except SealError:
                op.reset()
                continue
        if p is not None:
            typ, fields = records.decode(p)
            out.append((seq, typ, fields))
    return out


def tamper_events(m):
    return [f for _, typ, f in opened(m) if typ == records.REC_EVENT and f["event"] == "tamper"]


def checkpoint_records(m):
    return [(seq, rec) for seq, rec in m.journal.records() if len(rec) > 9 and rec[2] & 1
            and records.decode(Opener(m.keystore).open(seq, rec))[0] == records.REC_CHECKPOINT]


# --- keystore damage ---------------------------------------------------------------------------------------
def damage_blob(board, name, at=6):
    path = board.dir + "/keys/" + name + ".bin"
    with open(path, "rb") as f:
        data = bytearray(f.read())
    data[at % len(data)] ^= 0x40
    with open(path, "wb") as f:
        f.write(data)


def newest_hwm(board):
    import struct

    best = None
    for name in ("hwm0", "hwm1"):
        try:
            with open(board.dir + "/keys/" + name + ".bin", "rb") as f:
                gen = struct.unpack(">I", f.read(4))[0]
        except OSError:
            continue
        if best is None or gen > best[0]:
            best = (gen, name)
    return best[1]
