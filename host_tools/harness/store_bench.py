"""Store benchmark workloads, run on the MicroPython unix port by meterctl.bench_store.

Same workload for both contenders: 64-byte records, each durable before the next (Journal.append;
littlefs: write + flush). Figures come from the NOR simulator's counters and its datasheet timing
model; wall time is host time and only printed. Each function prints one JSON line.
"""
import json
import time

from sim.blockdev import NorBlockDev
from sim.nor import ENDURANCE, NorFlash

MIB = 1024 * 1024
SECONDS_PER_YEAR = 365.25 * 24 * 3600
PAYLOAD = bytes(range(64))


def _figures(name, f, records, stats0, mount_read, extra):
    s = f.stats()
    counts = s["erase_counts"]
    mean = sum(counts) / len(counts)
    top = max(counts)
    progd = s["bytes_programmed"] - stats0["bytes_programmed"]
    erases = s["erases"] - stats0["erases"]
    busy = s["busy_us"] - stats0["busy_us"]
    # Wear rate of the most-erased sector over the measured window, projected at 1 record/s.
    rate = [counts[i] - stats0["erase_counts"][i] for i in range(len(counts))]
    worst = max(rate)
    years = ENDURANCE * records / worst / SECONDS_PER_YEAR if worst else -1.0   # -1: no erase measured
    out = {
        "name": name,
        "records": records,
        "prog_per_payload_byte": progd / (records * len(PAYLOAD)),
        "erases_per_1000": erases * 1000 / records,
        "erase_max_over_mean": top / mean if mean else 0.0,
        "erase_spread": top - min(counts),
        "busy_us_per_record": busy / records,
        "mount_bytes_read": mount_read,
        "years_to_100k": years,
    }
    out.update(extra)
    print(json.dumps(out))
    return out


def journal_2mib(records=200000, warm=None, size=2 * MIB):
    from umeter.store import Journal
    from umeter.store import journal_layout as L
    f = NorFlash(size)
    j = Journal(f)
    per_pass = (f.size // f.sector_size) * ((f.sector_size - 48) // L.extent(len(PAYLOAD)))
    warm = per_pass + 1000 if warm is None else warm      # one full ring pass: retention is erasing
    for _ in range(warm):
        j.append(PAYLOAD)
    s0 = f.stats()
    t = time.ticks_ms()
    for _ in range(records):
        j.append(PAYLOAD)
    host_ms = time.ticks_diff(time.ticks_ms(), t)
    r0 = f.stats()["bytes_read"]
    t = time.ticks_us()
    j2 = Journal(f)
    mount_us = time.ticks_diff(time.ticks_us(), t)
    mount = f.stats()["bytes_read"] - r0
    st = j2.stats(len(PAYLOAD))
    return _figures("journal", f, records, s0, mount, {
        "warmup_records": warm, "ring_passes": (warm + records) / per_pass,
        "host_us_per_append": host_ms * 1000 / records,
        "appends_per_s": records * 1000 / host_ms if host_ms else 0.0,
        "mount_host_ms": mount_us / 1000, "device_mib": size / MIB,
        "capacity_records": st["capacity_records"], "retained_records": st["records"]})


def littlefs_2mib(records=5000, warm=500):
    import vfs
    f = NorFlash(2 * MIB)
    bdev = NorBlockDev(f)
    vfs.VfsLfs2.mkfs(bdev)
    fs = vfs.VfsLfs2(bdev)
    fh = fs.open("log", "ab")
    for _ in range(warm):
        fh.write(PAYLOAD)
        fh.flush()
    s0 = f.stats()
    t = time.ticks_ms()
    for _ in range(records):
        fh.write(PAYLOAD)
        fh.flush()
    host_ms = time.ticks_diff(time.ticks_ms(), t)
    fh.close()
    r0 = f.stats()["bytes_read"]
    fs2 = vfs.VfsLfs2(bdev)
    fs2.stat("log")                       # mount, and find the log
    mount = f.stats()["bytes_read"] - r0
    return _figures("littlefs", f, records, s0, mount, {
        "warmup_records": warm, "host_us_per_append": host_ms * 1000 / records})


def journal_16mib_mount():
    """A full W25Q128JV journal (ring wrapped, head half full of 64-byte records): mount bytes read and
    host time. The ring is filled with 2,000-byte records (two per sector, so filling takes seconds, not
    minutes), then the last sectors and the head with 64-byte records: mount reads 14 bytes per sector
    plus the head, whatever the older sectors hold. The image lives in a file, as the sim board's does:
    beside a 16 MiB heap block every small allocation costs ~1 ms on the 32-bit port (filling took
    170 s there); the host time of mount then includes the file reads, as a board's includes SPI reads."""
    import os

    from umeter.store import Journal
    from umeter.store import journal_layout as L
    path = "%s/umeter-bench-16mib-%d.img" % (os.getenv("TMPDIR") or "/tmp", time.ticks_us() & 0xFFFFFF)
    try:
        return _journal_16mib_mount(NorFlash(16 * MIB, path=path), Journal, L)
    finally:
        try:
            os.remove(path)
        except OSError:
            pass


def _journal_16mib_mount(f, Journal, L):
    j = Journal(f)
    sectors = f.size // f.sector_size
    big = bytes(2000)
    for _ in range(2 * sectors + 2):
        j.append(big)
    per = (f.sector_size - 48) // L.extent(len(PAYLOAD))
    for _ in range(2 * per + per // 2):
        j.append(PAYLOAD)
    r0 = f.stats()["bytes_read"]
    t = time.ticks_us()
    j2 = Journal(f)
    host_us = time.ticks_diff(time.ticks_us(), t)
    mount = f.stats()["bytes_read"] - r0
    out = {"name": "journal_16mib", "mount_bytes_read": mount, "mount_host_ms": host_us / 1000,
           "head_records": j2.head_records, "sectors": sectors, "last_seq": j2.last_seq}
    print(json.dumps(out))
    return out


def main(records=200000, lfs_records=5000):
    journal_2mib(records)
    littlefs_2mib(lfs_records)
    journal_16mib_mount()
