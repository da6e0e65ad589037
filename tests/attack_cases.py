"""What an attacker with a clip on the SPI flash does to a sim board image (JOURNAL.md revision 3), for
tests/test_export.py and tests/test_attacks.py. Records are found through the firmware's own Journal
(so these helpers follow the record layout), their bytes located in the image by their payload, and a
forged record gets both journal CRCs recomputed exactly as the journal computes them: the journal then
accepts it and only the seal, the chain and the high-water mark can notice."""
import json
import os
from binascii import crc32
from pathlib import Path

from meterctl import export as ex
from meterctl import mpcompat

SECTOR = 4096
JOURNAL_SIZE = 1536 * 1024           # boards/sim: the journal partition is the first 1.5 MiB
REC_HDR = 8                          # length(2), bytes 2-3, hcrc(4); then payload, pcrc(4)
SEQ_LEN = 6
HDR_FORMAT = 0x4C


class MemDevice:
    """A read-only flash device over bytes, for the firmware Journal."""

    def __init__(self, data, sector_size=SECTOR, page_size=256):
        self._data = bytes(data)
        self.size = len(self._data)
        self.sector_size = sector_size
        self.page_size = page_size

    def read(self, addr, n):
        return self._data[addr:addr + n]

    def readinto(self, addr, buf):
        buf[:] = self._data[addr:addr + len(buf)]


class Slot:
    """One valid journal record: its address (the record header), seq and payload length."""

    def __init__(self, addr, seq, length):
        self.addr, self.seq, self.length = addr, seq, length

    @property
    def payload(self):
        return self.addr + REC_HDR

    @property
    def end(self):
        return self.payload + self.length + 4

    @property
    def sector(self):
        return self.addr // SECTOR

    def __repr__(self):
        return "<Slot seq=%d at 0x%x, %d bytes>" % (self.seq, self.addr, self.length)


def journal_records(img):
    """(seq, payload) of every record the firmware journal yields from the image's journal partition."""
    mpcompat.install()
    from umeter.store import Journal
    from umeter.store.region import partitions

    j = Journal(partitions(MemDevice(img), ex.board_partitions("sim"))["journal"])
    return list(j.records())


def _length_at(img, addr):
    return img[addr] | img[addr + 1] << 8


def slots(img):
    """Every valid record of the journal, oldest first, with where it sits in the image."""
    img = bytes(img)
    out = []
    for seq, payload in journal_records(img):
        at = img.find(payload)
        while at >= 0 and not (at >= REC_HDR and _length_at(img, at - REC_HDR) == len(payload)):
            at = img.find(payload, at + 1)
        assert at >= REC_HDR, "record seq %d not found in the image" % seq
        out.append(Slot(at - REC_HDR, seq, len(payload)))
    return out


def fix_crc(img, s, seq=None):
    """Recompute a record's header and payload CRCs (seq(6) + header bytes 0-3 [+ payload]) for the seq
    it is stored under (or `seq`)."""
    pre = (s.seq if seq is None else seq).to_bytes(SEQ_LEN, "little") + bytes(img[s.addr:s.addr + 4])
    img[s.addr + 4:s.addr + 8] = crc32(pre).to_bytes(4, "little")
    body = bytes(img[s.payload:s.payload + s.length])
    img[s.payload + s.length:s.payload + s.length + 4] = crc32(pre + body).to_bytes(4, "little")


def sector_base(img, sec):
    """The base seq of a live journal sector (primary header, else backup), or None."""
    for off in (0, SECTOR - 32):
        h = bytes(img[sec * SECTOR + off:sec * SECTOR + off + 14])
        if h[0] == HDR_FORMAT and h[1:4] == b"UMJ" and crc32(h[:10]) == int.from_bytes(h[10:14], "little"):
            return int.from_bytes(h[4:10], "little")
    return None


def live_sectors(img):
    """Live journal sectors as [(base, sector index)], oldest (smallest base) first."""
    return sorted((b, s) for s in range(JOURNAL_SIZE // SECTOR) if (b := sector_base(img, s)) is not None)


def erase_sector(img, sec):
    img[sec * SECTOR:(sec + 1) * SECTOR] = b"\xff" * SECTOR


def edit(path, fn):
    img = bytearray(Path(path).read_bytes())
    fn(img)
    Path(path).write_bytes(img)


def state_region(board="sim"):
    """(offset, size) of the board's State partition (PARTITIONS: (name, size) in order)."""
    off = 0
    for name, size in ex.board_partitions(board):
        if name == "state":
            return off, size
        off += size
    raise KeyError("state")


def read_mark(path):
    return json.loads(Path(path).read_text())


# --- a full ring: the meter's history continued on the host ---------------------------------------------
def continue_until_retention(image, keys_dir, master, drops):
    """Continue the meter of `image` (keystore `keys_dir`, master key bytes) as the app would, until
    ring retention has dropped `drops` sectors: the firmware's Journal (on CPython) with an on_drop
    hook that seals a retention record (RECORDS.md 5) before each drop, checkpoints sealed by the
    host Sealer (byte-identical to the device's, tests/test_seal_kat.py) under a new key epoch, and
    the keystore's high-water mark advanced to the newest checkpoint. Filling 1.5 MiB with `sim run`
    would take hours of simulated time; this writes the same record formats in seconds.
    Returns the number of retention records written."""
    mpcompat.install()
    from sim.nor import NorFlash
    from umeter import records
    from umeter.hal.keystore_file import open_keystore
    from umeter.store import Journal
    from umeter.store.region import partitions

    from meterctl import sealing

    ks = open_keystore(str(keys_dir))
    epoch = ks.rotate()  # a boot
    size = Path(image).stat().st_size
    flash = NorFlash(size, path=str(image), in_ram=True)
    sealer = sealing.Sealer(sealing.Keyring(master), epoch)
    dropped = []
    journal = None

    def on_drop(first, last):
        kept_seq, kept_tag = 0, b""
        for kept_seq, rec in journal.records(since=last + 1):
            kept_tag = sealing.tag_of(rec)
            break
        seq = journal.next_seq
        rec = sealer.seal(seq, records.retention(first, last, kept_seq, kept_tag), anchor=True)
        assert journal.append(rec) == seq
        dropped.append(seq)

    journal = Journal(partitions(flash, ex.board_partitions("sim"))["journal"], on_drop=on_drop)
    last_seq, last_rec = list(journal.records())[-1]
    sealer.resume(last_seq, sealing.tag_of(last_rec))
    fu = (1 << 24) * 10 ** 6   # 1 MWh: well above the sim run's registers, so no floor is lowered
    t = 10 ** 9
    while len(dropped) < drops:
        fu += (1 << 24) * 1000
        t += 4000 * 20
        payload = records.checkpoint([1, 24, t, fu, 0, 0, 0])
        size_rec = sealing.HEADER_LEN + 1 + len(sealer.prev) + len(payload) + 16  # an anchor, alg 1
        seq = journal.make_room(size_rec)
        rec = sealer.seal(seq, payload, anchor=True)
        assert len(rec) == size_rec
        assert journal.append(rec) == seq
        last_seq, last_tag = seq, sealer.last_tag
    ks.advance_mark(last_seq, last_tag, epoch, {"1.8.0": fu >> 24, "2.8.0": 0, "3.8.0": 0, "4.8.0": 0})
    flash.close()
    for f in Path(keys_dir).iterdir():  # as the meter's own key files are (umask 077): 0600
        os.chmod(f, 0o600)
    return len(dropped)
