"""`meterctl export --port`: stream a device's journal over serial (raw REPL), and its high-water mark.

A small script exec'd on the device (DEVICE_SCRIPT) walks the journal in chunks and prints
`R <seq> <hex>` lines; the host does all verification (meterctl.export_verify). The mark is read first
(meterctl.markfile), so every record it can name is already on the journal when it is walked."""
from binascii import unhexlify

from meterctl import markfile
from meterctl.cli import CliError
from meterctl.export import CHUNK_RECORDS, Snapshot

# MicroPython, exec'd on the device. The virtual board's meter runs in a thread that owns the simulated
# SPI bus, so there the image file is read directly; on a real board the running meter's flash driver is
# reused (building a second driver would reset the chip under the meter). A fresh Journal mount per
# chunk keeps the meter's own Journal object untouched and follows the ring if it moves meanwhile.
DEVICE_SCRIPT = r"""
class _UmxImage:
    def __init__(self, path):
        import os
        self._f = open(path, 'rb')
        self.size = os.stat(path)[6]
        self.sector_size = 4096
        self.page_size = 256
    def read(self, addr, n):
        self._f.seek(addr)
        return self._f.read(n)
    def readinto(self, addr, buf):
        self._f.seek(addr)
        self._f.readinto(buf)
    def close(self):
        self._f.close()
def _umx_journal():
    import sys
    import board
    from umeter.store.journal import Journal
    from umeter.store.region import partitions
    img = getattr(board, 'flash_image', None)
    if img is not None:
        dev = _UmxImage(img())
    else:
        a = sys.modules.get('umeter.app')
        m = a.meter() if a is not None else None
        r = None
        if m is not None:
            r = m.journal.dev if m.journal is not None else (m.state.dev if m.state is not None else None)
        dev = r.dev if r is not None else board.flash()
    return Journal(partitions(dev, board.PARTITIONS)['journal']), dev
def _umx_dump(since, limit):
    import gc
    from binascii import hexlify
    j, dev = _umx_journal()
    n = 0
    nxt = 0
    for seq, rec in j.records(since):
        if n == limit:
            nxt = seq
            break
        print('R', seq, hexlify(rec).decode())
        n += 1
    st = j.stats()
    print('S', st['last_seq'], st['oldest_seq'], st['corrupt_skipped'], st['records'], nxt, dev.sector_size)
    if hasattr(dev, 'close'):
        dev.close()
    gc.collect()
"""
DEVICE_CLEANUP = "del _UmxImage, _umx_journal, _umx_dump\nimport gc\ngc.collect()\n"


def read_device(port, timeout=10.0, progress=None, chunk=CHUNK_RECORDS):
    """Stream the device's journal records over serial. progress(done, total) after each chunk.
    Serial failures are remote.RemoteError, a CliError."""
    from meterctl.remote import Remote

    recs = []
    first = None
    corrupt = 0
    since = 0
    with Remote(port, timeout=timeout) as dev:
        # The mark first: every record it can name is then already on the journal when it is walked.
        mark = markfile.read_device(dev, port)
        dev.exec(DEVICE_SCRIPT)
        while True:
            got = []
            status = []

            def line(text, got=got, status=status):
                if text.startswith("R "):
                    got.append(text)
                elif text.startswith("S "):
                    status.append(text)

            dev.exec("_umx_dump(%d, %d)" % (since, chunk), on_line=line)
            if len(status) != 1:
                raise CliError("the device on %s sent no journal summary (is the umeter firmware "
                               "installed?)" % port)
            for text in got:
                seq, rec = _parse_record_line(text, port)
                if recs and seq <= recs[-1][0]:
                    raise CliError("the device on %s sent records out of order (seq %d after %d): "
                                   "transfer garbled" % (port, seq, recs[-1][0]))
                recs.append((seq, rec))
            try:
                last_seq, oldest, bad, count, nxt, ss = (int(v) for v in status[0].split()[1:7])
            except ValueError:
                raise CliError("garbled journal summary from the device on %s" % port) from None
            if first is None:
                first = (oldest, last_seq, ss, count)
            corrupt = max(corrupt, bad)
            if progress is not None:
                progress(len(recs), max(count, len(recs)))
            if not nxt:
                break
            since = nxt
        dev.exec(DEVICE_CLEANUP)
    oldest, _, ss, _ = first
    last = recs[-1][0] if recs else first[1]
    return Snapshot(port, recs, oldest, last, corrupt, ss, mark)


def _parse_record_line(text, port):
    parts = text.split()
    try:
        if len(parts) != 3:
            raise ValueError
        return int(parts[1]), unhexlify(parts[2])
    except ValueError:
        raise CliError("garbled record line from the device on %s (serial noise?): %r"
                       % (port, text[:40])) from None
