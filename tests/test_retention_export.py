"""Retention by age as `meterctl export` sees it (issue 14 item 4): an image whose oldest sector the meter
dropped with umeter.retention.expire exports with exit 0, also with --strict, and says the oldest record
is the one the retention record keeps; the same sector erased without a retention record (a clip) is
tamper, exit 3.

The image is written the way the app writes it: the firmware's Journal (on CPython) with an on_drop that
seals a retention record (RECORDS.md 5) before the drop, records sealed by the host Sealer (byte-identical
to the device's, tests/test_seal_kat.py): a genesis checkpoint, a boot event, then every simulated minute
a checkpoint (an anchor, with the engine time) and every 15 minutes a load-profile record before it (every
other one minimised to energy only: export shows its other fields empty); the keystore's high-water mark
at the newest checkpoint. Fast: no simulated metering."""
import json
import os
from pathlib import Path

import attack_cases as A
import pytest

from meterctl import export as ex
from meterctl import mpcompat, sealing
from meterctl.cli import main as meterctl_main

RATE = 4000                      # samples per second (engine time)
MINUTE = 60 * RATE
KEY = bytes(range(40, 72))


def _profile(minute):
    import struct

    return struct.pack("<BBHIIIIIHHHII", 2, 0, 15, minute * 60, 287500, 0, 0, 0, 22990, 23000, 23010,
                       1150000, 0)


def _build(tmp, drop, minutes=150):
    """A flash image and its keystore directory: `minutes` of records; with drop, then retention.expire
    with a retention that covers exactly the oldest sector. Returns (image, keys dir, info)."""
    mpcompat.install()
    from sim.nor import NorFlash
    from umeter import records, retention
    from umeter.hal.keystore_file import open_keystore
    from umeter.store import Journal
    from umeter.store.region import partitions

    image, keys = tmp / "meter.img", tmp / "meter.img.keys"
    ks = open_keystore(str(keys))
    ks.provision(KEY)
    epoch = ks.rotate()
    sealer = sealing.Sealer(sealing.Keyring(KEY), epoch)
    flash = NorFlash(2 * 1024 * 1024, path=str(image), in_ram=True)
    journal = None
    sealed = []

    def store(payload, anchor):
        seq = journal.next_seq
        assert journal.append(sealer.seal(seq, payload, anchor=anchor)) == seq
        return seq

    def on_drop(first, last):                   # what the app's on_drop does (app.py)
        kept_seq, kept_tag = 0, b""
        for kept_seq, rec in journal.records(since=last + 1):
            kept_tag = sealing.tag_of(rec)
            break
        sealed.append(store(records.retention(first, last, kept_seq, kept_tag), True))

    journal = Journal(partitions(flash, ex.board_partitions("sim"))["journal"], on_drop=on_drop)
    fu = 0
    checkpoints = {}

    def checkpoint(t):
        seq = store(records.checkpoint([1, 24, t, fu, 0, 0, 0]), True)
        checkpoints[seq] = t
        return seq

    checkpoint(0)                               # genesis: an anchor with no predecessor
    store(records.event(records.EV_BOOT, 1, "umeter test"), False)
    for minute in range(1, minutes + 1):
        fu += 19166 << 24                       # 1150 W for a minute, in FU
        if minute % 15 == 0:                    # every other one minimised to energy only (RECORDS.md 2.1)
            fields = records.FIELDS_ALL if minute % 30 else 0
            store(records.profile(_profile(minute), fields), False)
        checkpoint(minute * MINUTE)
    first, last = journal.oldest_sector()
    bound = min(t for s, t in checkpoints.items() if s >= last)
    now = minutes * MINUTE
    info = {"first": first, "last": last, "sectors": sum(1 for k in journal.kinds if k == 1)}
    if drop:
        op = sealing.Opener(sealing.Keyring(KEY))

        def opener(seq, rec):                   # anchors, each verified on its own
            if not (len(rec) > 9 and rec[2] & 1):
                return None
            op.reset()
            try:
                return op.open(seq, rec)
            except sealing.SealError:
                return None

        assert retention.expire(journal, opener, now, now - bound + 1) == 0    # one sample short
        info["dropped"] = retention.expire(journal, opener, now, now - bound)
        info["retention_seq"] = sealed[-1] if sealed else 0
    fu += 19166 << 24
    mark = checkpoint(now + MINUTE)             # the next checkpoint: the mark moves to it
    ks.advance_mark(mark, sealer.last_tag, epoch, {"1.8.0": fu >> 24, "2.8.0": 0, "3.8.0": 0, "4.8.0": 0})
    info["oldest_kept_is_anchor"] = [rec[2] & 1 for seq, rec in journal.records(since=last + 1)][0] == 1
    flash.close()
    os.chmod(keys, 0o700)                       # as the meter's own keystore is (umask 077)
    for f in Path(keys).iterdir():
        os.chmod(f, 0o600)
    return image, keys, info


def _export(capsys, image, keys, *extra):
    status = meterctl_main(["export", "--image", str(image), "--key-dir", str(keys), "--format", "json",
                            *extra])
    out = capsys.readouterr()
    return status, out.out, out.err


def test_dropped_by_age_exports_as_retention(tmp_path, capsys):
    image, keys, info = _build(tmp_path, drop=True)
    assert info["sectors"] >= 3 and info["dropped"] == 1 and info["retention_seq"]
    # the oldest kept record of this image is a checkpoint (an anchor): it verifies on its own, so
    # --strict has nothing withheld (a profile or event there would be INCOMPLETE under --strict, exit 5)
    assert info["oldest_kept_is_anchor"]
    for extra in ((), ("--strict",)):
        status, out, err = _export(capsys, image, keys, *extra)
        assert status == 0, err
        doc = json.loads(out)
        s = doc["summary"]
        assert s["first_seq"] == info["last"] + 1 and s["retention_records"] == [info["retention_seq"]]
        assert "oldest kept by the retention record" in " ".join(s["checks"])
        seqs = [r["seq"] for r in doc["records"]]
        assert min(seqs) > info["last"]          # nothing from the dropped sector is left
        prof = [r for r in doc["records"] if r["type"] == "profile"]
        assert prof and all(r["1.8.0"] == 287.5 and r["minutes"] == 15 for r in prof)
        full = [r["32.5.0"] for r in prof if r["t_end_s"] % 1800]
        energy_only = [r["32.5.0"] for r in prof if r["t_end_s"] % 1800 == 0]
        assert full and set(full) == {230.0} and energy_only and set(energy_only) == {None}
        ret = [r for r in doc["records"] if r["type"] == "retention"]
        assert [(r["first_dropped"], r["last_dropped"]) for r in ret] == [(info["first"], info["last"])]


def test_same_sector_erased_without_a_retention_record_is_tamper(tmp_path, capsys):
    image, keys, info = _build(tmp_path, drop=False)
    img = bytearray(image.read_bytes())
    oldest = A.live_sectors(img)[0]
    assert oldest[0] == info["first"] == 1
    A.erase_sector(img, oldest[1])               # the clip does what expire did, without the record
    image.write_bytes(img)
    for extra in ((), ("--strict",)):
        status, out, err = _export(capsys, image, keys, *extra)
        assert status == ex.EXIT_TAMPER, err
        assert "oldest end were deleted" in err and out == ""


@pytest.fixture(autouse=True)
def _no_cwd_leftovers(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
