"""`meterctl export` against images made by the real firmware (headless virtual board), and over serial
against the virtual board: a clean export verifies and decodes plausible energy; single-byte flips (raw,
and forged with a valid journal CRC so only the seal can catch them), swapped, deleted and spliced
records, a restored older image, a wrong key and bad input are each reported with their exit status and
nothing is written; no key material ever appears in any output."""
import base64
import csv
import hashlib
import io
import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import attack_cases
import pytest

from meterctl import export as ex
from meterctl import mpcompat, sealing
from meterctl.cli import main as meterctl_main
from meterctl.vboard import VirtualBoard

BIN = Path(sys.executable).parent
METERCTL = str(BIN / "meterctl")
SECTOR = attack_cases.SECTOR
SCENARIO = {"irms": 5}                # 230 V, 5 A, PF 1: 1150 W
EXPECTED_W = 230.0 * 5.0

# --- images made by the firmware (built once per test session, shared by xdist workers) ------------------


def _sim_run(workdir, image, seconds):
    scen = workdir / "scenario.json"
    scen.write_text(json.dumps(SCENARIO))
    proc = subprocess.run([METERCTL, "sim", "run", "--scenario", str(scen), "--seconds", str(seconds),
                           "--image", str(image), "--json"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _provision_dir(directory, key):
    mpcompat.install()
    from umeter.hal.keystore_file import open_keystore

    open_keystore(str(directory)).provision(key)


def _build(root):
    """A: a meter provisioned with a key file, 960 s (one 15-minute profile), copied as A_old, then 130 s
    more. B: another meter (the virtual board's own development key), 70 s."""
    key_a = root / "a.key"
    assert subprocess.run([METERCTL, "keys", "new", "--out", str(key_a)], capture_output=True).returncode == 0
    _provision_dir(root / "A.img.keys", key_a.read_bytes())
    run1 = _sim_run(root, root / "A.img", 960)
    shutil.copy(root / "A.img", root / "A_old.img")
    shutil.copytree(root / "A.img.keys", root / "A_old.img.keys")
    run2 = _sim_run(root, root / "A.img", 130)
    run_b = _sim_run(root, root / "B.img", 70)
    (root / "runs.json").write_text(json.dumps({"A_old": run1, "A": run2, "B": run_b}))
    (root / "done").write_text("ok")


@pytest.fixture(scope="session")
def images(tmp_path_factory):
    # Under xdist every worker has its own basetemp in one per-session directory: build there once.
    base = tmp_path_factory.getbasetemp()
    root = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "export-images"
    try:
        root.mkdir()
        _build(root)
    except FileExistsError:
        deadline = time.monotonic() + 600
        while not (root / "done").exists():
            assert time.monotonic() < deadline, "image build by another worker did not finish"
            time.sleep(0.2)
    return root


@pytest.fixture(scope="session")
def keyset(images):
    """Every key the tests touch, to prove none of them leaks into any output."""
    mpcompat.install()
    from umeter.hal.keystore_file import open_keystore

    keys = [(images / "a.key").read_bytes(), open_keystore(str(images / "B.img.keys")).master_for(1)]
    wrong = images / "wrong.key"
    if not wrong.exists():
        subprocess.run([METERCTL, "keys", "new", "--out", str(wrong)], capture_output=True)
    keys.append(wrong.read_bytes())
    return keys


def assert_no_key_material(text, keys):
    for k in keys:
        for form in (k.hex(), k.hex().upper(), repr(k), base64.b64encode(k).decode(), k.hex()[:16]):
            assert form not in text, "key material in output"
        assert k.decode("latin-1") not in text


def runs(images):
    return json.loads((images / "runs.json").read_text())


def copy_image(images, tmp_path, name="A"):
    dst = tmp_path / ("%s.img" % name)
    shutil.copy(images / ("%s.img" % name), dst)
    return dst


def export(capsys, keyset, *argv):
    """Run `meterctl export` in-process; returns (status, stdout, stderr), checked for key material."""
    status = meterctl_main(["export", *map(str, argv)])
    out = capsys.readouterr()
    assert_no_key_material(out.out + out.err, keyset)
    return status, out.out, out.err


# --- the journal format (JOURNAL.md revision 3): tests/attack_cases.py forges records the way an attacker
# with a clip would, with both journal CRCs recomputed.
slots, fix_crc, edit = attack_cases.slots, attack_cases.fix_crc, attack_cases.edit


def assert_tamper(status, out, err, outfile=None):
    assert status == ex.EXIT_TAMPER, err
    assert err.strip().splitlines()[-1].startswith("meterctl export: TAMPER: "), err
    assert out == ""
    if outfile is not None:
        assert not outfile.exists()
        assert [p.name for p in outfile.parent.iterdir() if p.name.endswith(".tmp")] == []


# --- clean exports ---------------------------------------------------------------------------------------

def test_clean_export_verifies_and_decodes_plausible_energy(images, keyset, tmp_path, capsys):
    img = copy_image(images, tmp_path)
    before = hashlib.sha256(img.read_bytes()).hexdigest()
    out_csv, out_json = tmp_path / "a.csv", tmp_path / "a.json"
    status, out, err = export(capsys, keyset, "--image", img, "--key", images / "a.key", "--out", out_csv)
    assert status == 0, err
    assert out == ""
    assert err.strip().splitlines()[-1].startswith("meterctl export: ")
    status, _, err = export(capsys, keyset, "--image", img, "--key-dir", images / "A.img.keys",
                            "--format", "json", "--out", out_json)
    assert status == 0, err
    assert hashlib.sha256(img.read_bytes()).hexdigest() == before  # never written to
    assert sorted(p.name for p in tmp_path.iterdir()) == ["A.img", "a.csv", "a.json"]

    doc = json.loads(out_json.read_text())
    rows = list(csv.DictReader(io.StringIO(out_csv.read_text())))
    recs = doc["records"]
    run = runs(images)["A"]
    assert len(rows) == len(recs) == doc["summary"]["verified"] == run["records"]
    # Seqs are positional (JOURNAL.md revision 3): strictly increasing, not contiguous. Every record on
    # the journal is exported, in journal order, and the chain links them one to the next.
    seqs = [s.seq for s in slots(img.read_bytes())]
    assert [int(r["seq"]) for r in rows] == [r["seq"] for r in recs] == seqs
    assert seqs[0] == 1 and seqs[-1] == run["last_seq"] and seqs == sorted(set(seqs))
    assert doc["summary"]["withheld"] == [] and doc["summary"]["journal_corrupt_skipped"] == 0
    assert doc["summary"]["key_ids"] == [ex.keys_from_file(images / "a.key").key_ids[0]]
    assert "high-water mark" in " ".join(doc["summary"]["checks"])
    for r, j in zip(rows, recs):  # CSV and JSON say the same
        assert r["type"] == j["type"]
        for k, v in j.items():
            assert r[k] == str(v)

    profiles = [r for r in recs if r["type"] == "profile"]
    checkpoints = [r for r in recs if r["type"] == "checkpoint"]
    events = [r for r in recs if r["type"] == "event"]
    assert len(profiles) == 1 and len(checkpoints) >= 17 and [e["event"] for e in events] == ["boot", "boot"]
    p = profiles[0]
    assert p["minutes"] == 15 and p["t_end_s"] == 900
    assert abs(p["1.8.0"] - EXPECTED_W * 0.25) < 0.01 * EXPECTED_W * 0.25   # Wh in 15 minutes
    assert p["2.8.0"] == 0.0
    assert 229.0 < p["32.3.0"] <= p["32.5.0"] <= p["32.6.0"] < 231.0
    assert abs(p["1.6.0"] - EXPECTED_W) < 0.01 * EXPECTED_W
    energy = [c["1.8.0"] for c in checkpoints]
    assert energy == sorted(energy) and energy[0] > 0
    # The newest checkpoint is the run's final register, to the mWh.
    assert checkpoints[-1]["1.8.0"] == pytest.approx(run["energy_import_wh"], abs=0.0005)
    assert checkpoints[-1]["t_samples"] == (960 + 130) * 4000
    # Each key epoch is one boot (the app rotates the epoch at every boot).
    assert sorted({r["key_epoch"] for r in recs}) == [2, 3]


def test_stdout_and_key_dir_of_the_development_key(images, keyset, capsys):
    status, out, err = export(capsys, keyset, "--image", images / "B.img", "--key-dir", images / "B.img.keys")
    assert status == 0, err
    rows = list(csv.DictReader(io.StringIO(out)))
    assert rows[0]["type"] == "event" and rows[0]["event"] == "boot"
    assert int(rows[-1]["seq"]) == runs(images)["B"]["last_seq"]


def test_cli_entry_point_and_help_document_exit_codes(images, keyset):
    proc = subprocess.run([METERCTL, "export", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0
    for code in ("3  TAMPER", "4  WRONG KEY", "2  bad input"):
        assert code in proc.stdout
    # A separate process: the firmware modules load under meterctl's own micropython stand-in.
    proc = subprocess.run([METERCTL, "export", "--image", str(images / "A.img"), "--key",
                           str(images / "a.key"), "--format", "json"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert [r["type"] for r in json.loads(proc.stdout)["records"]].count("profile") == 1
    proc = subprocess.run([METERCTL, "export", "--image", str(images / "A.img"), "--key",
                           str(images / "wrong.key")], capture_output=True, text=True)
    assert proc.returncode == ex.EXIT_WRONG_KEY and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "WRONG KEY" in proc.stderr
    assert_no_key_material(proc.stdout + proc.stderr, keyset)


# --- tamper ----------------------------------------------------------------------------------------------

def test_random_single_byte_flips_are_detected(images, keyset, tmp_path, capsys):
    """Any byte of any record slot, flipped on the raw image (the journal CRC also sees these; the chain
    and the keystore's high-water mark turn them into a verdict)."""
    rng = random.Random(1)
    pristine = (images / "A.img").read_bytes()
    all_slots = slots(pristine)
    assert len(all_slots) == runs(images)["A"]["records"]
    picks = [all_slots[0], all_slots[-1]] + rng.sample(all_slots[1:-1], 10)
    for s in picks:
        img = tmp_path / "flip.img"
        img.write_bytes(pristine)
        at = s.addr + rng.randrange(s.end - s.addr)
        edit(img, lambda b: b.__setitem__(at, b[at] ^ rng.randrange(1, 256)))
        out = tmp_path / "out.csv"
        status, so, err = export(capsys, keyset, "--image", img, "--key-dir", images / "A.img.keys",
                                 "--out", out)
        assert_tamper(status, so, err, out)


def test_forged_flips_with_a_valid_journal_crc_are_caught_by_the_seal(images, keyset, tmp_path, capsys):
    """The journal CRC is recomputed, so only the MAC and the chain can notice; no high-water mark given."""
    rng = random.Random(2)
    pristine = (images / "A.img").read_bytes()
    all_slots = slots(pristine)
    for s in [all_slots[0], all_slots[-1]] + rng.sample(all_slots[1:-1], 10):
        img = tmp_path / "forged.img"
        img.write_bytes(pristine)
        at = s.payload + rng.randrange(s.length)
        while s is all_slots[-1] and 3 <= at - s.payload < 7:  # see the next test
            at = s.payload + rng.randrange(s.length)

        def forge(b, at=at, s=s):
            b[at] ^= rng.randrange(1, 256)
            fix_crc(b, s)

        edit(img, forge)
        assert ex.read_image(img).records != ex.read_image(images / "A.img").records  # journal accepts it
        status, out, err = export(capsys, keyset, "--image", img, "--key", images / "a.key")
        assert_tamper(status, out, err)


def test_newest_record_with_an_altered_key_epoch_needs_the_high_water_mark(images, keyset, tmp_path, capsys):
    """A new key epoch under a master key the exporter lacks (a re-key) and an altered epoch field in the
    newest record look alike to the key alone: both are 'wrong key', never a clean export. The keystore's
    high-water mark (the newest checkpoint, which must verify) makes it tamper."""
    img = copy_image(images, tmp_path)
    last = slots(img.read_bytes())[-1]

    def forge(b):
        b[last.payload + 6] ^= 0x40  # low byte of the u32 big-endian key epoch
        fix_crc(b, last)

    edit(img, forge)
    status, out, err = export(capsys, keyset, "--image", img, "--key", images / "a.key")
    assert status == ex.EXIT_WRONG_KEY and out == "" and "altered record header" in err
    status, out, err = export(capsys, keyset, "--image", img, "--key-dir", images / "A.img.keys")
    assert_tamper(status, out, err)


def synth_image(path, key, n):
    """A multi-sector journal image written by the firmware's Journal and sealed by the host Sealer
    (byte-identical to the device's, tests/test_seal_kat.py): n records, an anchor every 10th."""
    mpcompat.install()
    from sim.nor import NorFlash
    from umeter import records
    from umeter.store import Journal, partitions

    flash = NorFlash(2 * 1024 * 1024, path=str(path))
    j = Journal(partitions(flash, ex.board_partitions("sim"))["journal"])
    sealer = sealing.Sealer(key, 1)
    for i in range(n):
        if i % 3:
            payload = records.checkpoint([1, 24, i * 240000, i * 19160 << 24, 0, 7 << 24, 0])
        else:
            payload = records.event(records.EV_BOOT, i, "synthetic meter")
        seq = j.next_seq
        assert j.append(sealer.seal(seq, payload, anchor=i % 10 == 0)) == seq
    flash.close()
    return path


def test_swapped_records_are_detected(images, keyset, tmp_path, capsys):
    pristine = (images / "A.img").read_bytes()
    ss = slots(pristine)
    # Two neighbouring checkpoints have the same length: swap their sealed payloads under their seqs.
    i = next(k for k in range(3, len(ss) - 1) if ss[k].length == ss[k + 1].length)
    a, b = ss[i], ss[i + 1]

    def swap_payloads(img):
        pa, pb = bytes(img[a.payload:a.payload + a.length]), bytes(img[b.payload:b.payload + b.length])
        img[a.payload:a.payload + a.length], img[b.payload:b.payload + b.length] = pb, pa
        fix_crc(img, a)
        fix_crc(img, b)

    def swap_slots(img):  # whole slots, seq headers included
        sa, sb = bytes(img[a.addr:a.payload + a.length]), bytes(img[b.addr:b.payload + b.length])
        img[a.addr:a.payload + a.length], img[b.addr:b.payload + b.length] = sb, sa

    img = tmp_path / "swap.img"
    img.write_bytes(pristine)
    edit(img, swap_payloads)
    # The journal sees nothing wrong; the MAC covers the seq: caught by the key alone.
    assert [s for s, _ in ex.read_image(img).records] == [s.seq for s in ss]
    assert_tamper(*export(capsys, keyset, "--image", img, "--key", images / "a.key"))
    img.write_bytes(pristine)
    edit(img, swap_slots)
    # In the head sector the journal stops at the out-of-place seq (its newest records vanish, as in
    # a rollback): the keystore's high-water mark catches it.
    assert_tamper(*export(capsys, keyset, "--image", img, "--key-dir", images / "A.img.keys"))


def test_swapped_and_deleted_records_in_older_sectors_break_the_chain(images, keyset, tmp_path, capsys):
    key = (images / "a.key").read_bytes()
    pristine = synth_image(tmp_path / "synth.img", key, 250).read_bytes()
    ss = slots(pristine)
    assert len(ss) == 250 and ss[-1].addr // SECTOR >= 3  # several sectors
    assert export(capsys, keyset, "--image", tmp_path / "synth.img", "--key", images / "a.key")[0] == 0
    sec1 = [s for s in ss if s.addr // SECTOR == 1]
    mid = sec1[len(sec1) // 2]
    k = next(k for k in range(len(sec1) - 1) if sec1[k].length == sec1[k + 1].length)
    a, b = sec1[k], sec1[k + 1]

    def delete(img, v=mid):  # later records of the sector move up; their seqs stay
        sec_end = (v.addr // SECTOR + 1) * SECTOR
        rest = bytes(img[v.payload + v.length:sec_end])
        img[v.addr:sec_end] = rest + b"\xff" * (sec_end - v.addr - len(rest))

    def swap_slots(img):
        sa, sb = bytes(img[a.addr:a.payload + a.length]), bytes(img[b.addr:b.payload + b.length])
        img[a.addr:a.payload + a.length], img[b.addr:b.payload + b.length] = sb, sa

    def drop_sector(img):  # a whole middle sector erased
        img[SECTOR * 2:SECTOR * 3] = b"\xff" * SECTOR

    for fn in (delete, swap_slots, drop_sector):
        img = tmp_path / "m.img"
        img.write_bytes(pristine)
        edit(img, fn)
        assert img.read_bytes() != pristine
        assert_tamper(*export(capsys, keyset, "--image", img, "--key", images / "a.key"))


def test_deleted_middle_record_is_detected(images, keyset, tmp_path, capsys):
    pristine = (images / "A.img").read_bytes()
    ss = slots(pristine)
    for victim in (ss[len(ss) // 2], ss[1]):  # a middle record, and the one after the genesis record
        def delete(img, v=victim):
            sec_end = (v.addr // SECTOR + 1) * SECTOR
            rest = bytes(img[v.payload + v.length:sec_end])
            img[v.addr:sec_end] = rest + b"\xff" * (sec_end - v.addr - len(rest))

        img = tmp_path / "del.img"
        img.write_bytes(pristine)
        edit(img, delete)
        assert victim.seq not in [s for s, _ in ex.read_image(img).records]
        assert_tamper(*export(capsys, keyset, "--image", img, "--key-dir", images / "A.img.keys"))


def test_oldest_record_removed_is_detected(images, keyset, tmp_path, capsys):
    img = copy_image(images, tmp_path)
    first = slots(img.read_bytes())[0]
    edit(img, lambda b: b.__setitem__(first.addr, b[first.addr] ^ 0x01))  # its length: the journal skips it
    assert ex.read_image(img).records[0][0] == slots(img.read_bytes())[0].seq > first.seq
    status, out, err = export(capsys, keyset, "--image", img, "--key", images / "a.key")
    assert_tamper(status, out, err)
    assert "oldest end" in err


def test_record_spliced_from_another_meter_is_detected(images, keyset, tmp_path, capsys):
    mine = (images / "A.img").read_bytes()
    theirs = (images / "B.img").read_bytes()
    their_slots = {s.seq: s for s in slots(theirs)}
    cands = [s for s in slots(mine) if s.seq in their_slots and their_slots[s.seq].length == s.length]
    assert len(cands) >= 2
    for s in (cands[0], cands[-1]):
        t = their_slots[s.seq]

        def splice(img, s=s, t=t):
            img[s.payload:s.payload + s.length] = theirs[t.payload:t.payload + t.length]
            fix_crc(img, s)

        img = tmp_path / "splice.img"
        img.write_bytes(mine)
        edit(img, splice)
        status, out, err = export(capsys, keyset, "--image", img, "--key", images / "a.key")
        assert_tamper(status, out, err)  # tamper (3), not "wrong key": the other records verify


def test_restored_older_image_is_a_rollback(images, keyset, tmp_path, capsys):
    new_last = runs(images)["A"]["last_seq"]
    old = copy_image(images, tmp_path, "A_old")
    status, out, err = export(capsys, keyset, "--image", old, "--key", images / "a.key")
    assert status == 0, err  # on its own, an older image is a valid image
    status, out, err = export(capsys, keyset, "--image", old, "--key", images / "a.key",
                              "--min-seq", new_last)
    assert_tamper(status, out, err)
    assert "rollback" in err
    # The meter's internal storage (its keystore) holds the newer high-water mark: same verdict.
    status, out, err = export(capsys, keyset, "--image", old, "--key-dir", images / "A.img.keys")
    assert_tamper(status, out, err)
    assert "rollback" in err


def test_wrong_key_is_a_clear_error_and_writes_nothing(images, keyset, tmp_path, capsys):
    out = tmp_path / "x.json"
    status, so, err = export(capsys, keyset, "--image", images / "A.img", "--key", images / "wrong.key",
                             "--format", "json", "--out", out)
    assert status == ex.EXIT_WRONG_KEY, err
    assert so == "" and err.count("\n") == 1 and err.startswith("meterctl export: WRONG KEY: ")
    assert not out.exists() and list(tmp_path.iterdir()) == []
    # Another meter's keystore carries its high-water mark: a journal on which none of that meter's
    # records opens is not its flash (replaced), or the keys are another meter's. Both are named.
    status, so, err = export(capsys, keyset, "--image", images / "A.img", "--key-dir", images / "B.img.keys",
                             "--format", "json", "--out", out)
    assert_tamper(status, so, err, out)
    assert "another meter" in err and err.count("\n") == 1


def test_blank_image_is_an_empty_export_unless_a_mark_says_otherwise(images, keyset, tmp_path, capsys):
    blank = tmp_path / "blank.img"
    blank.write_bytes(b"\xff" * (2 * 1024 * 1024))
    status, out, err = export(capsys, keyset, "--image", blank, "--key", images / "a.key")
    assert status == 0 and out.strip() == ",".join(ex.COLUMNS)
    status, out, err = export(capsys, keyset, "--image", blank, "--key", images / "a.key", "--min-seq", 5)
    assert_tamper(status, out, err)
    assert "rollback" in err


# --- bad input -------------------------------------------------------------------------------------------

def test_bad_input_is_one_line_and_writes_nothing(images, keyset, tmp_path, capsys):
    key = ["--key", images / "a.key"]
    out = tmp_path / "out" / "x.csv"
    out.parent.mkdir()
    junk = tmp_path / "junk.img"
    junk.write_bytes(random.Random(3).randbytes(2 * 1024 * 1024))
    odd = tmp_path / "odd.img"
    odd.write_bytes(b"\xff" * 5000)
    zero = tmp_path / "zero.img"
    zero.write_bytes(bytes(2 * 1024 * 1024))
    loose = tmp_path / "loose.key"
    loose.write_bytes(bytes(32))
    loose.chmod(0o644)
    short = tmp_path / "short.key"
    short.write_bytes(bytes(8))
    short.chmod(0o600)
    cases = [
        (["--image", tmp_path / "missing.img", *key], "does not exist"),
        (["--image", tmp_path, *key], "not a file"),
        (["--image", junk, *key], "not a umeter flash image"),
        (["--image", odd, *key], "not a whole number"),
        (["--image", zero, *key], "not a umeter flash image"),  # zeroed: foreign, never an empty journal
        (["--image", images / "A.img", "--key", tmp_path / "none.key"], "cannot read key file"),
        (["--image", images / "A.img", "--key", loose], "chmod 600"),
        (["--image", images / "A.img", "--key", short], "not a device key file"),
        (["--image", images / "A.img", "--key-dir", tmp_path / "nokeys"], "does not exist"),
        (["--image", images / "A.img", "--key-dir", out.parent], "holds no device key"),
        (["--image", images / "A.img", *key, "--board", "nosuchboard"], "unknown board"),
        (["--port", "/dev/umeter-no-such-port", *key], "does not exist"),
    ]
    for argv, why in cases:
        status, so, err = export(capsys, keyset, *argv, "--out", out)
        assert status == 2, (argv, err)
        assert so == "" and err.count("\n") == 1 and why in err, (argv, err)
        assert list(out.parent.iterdir()) == []
    assert not (tmp_path / "nokeys").exists()  # a key directory is never created


def test_device_not_answering(images, keyset, tmp_path, capsys):
    master, slave = os.openpty()  # a port nobody answers on
    try:
        out = tmp_path / "x.csv"
        status, so, err = export(capsys, keyset, "--port", os.ttyname(slave), "--key", images / "a.key",
                                 "--timeout", "1", "--out", out)
    finally:
        os.close(master)
        os.close(slave)
    assert status == 2 and so == "" and err.count("\n") == 1 and "not answering" in err
    assert list(tmp_path.iterdir()) == []


# --- over serial: the virtual board ----------------------------------------------------------------------

def test_export_over_serial_matches_the_image(images, keyset, tmp_path, capsys):
    """The meter from image A booted on a virtual board; `export --port` streams its journal (chunked)
    and must give the same rows as the image export for every record the image has."""
    bd = tmp_path / "board"
    bd.mkdir()
    shutil.copy(images / "A.img", bd / "flash.img")
    shutil.copytree(images / "A.img.keys", bd / "keys")
    status, out, err = export(capsys, keyset, "--image", images / "A.img", "--key", images / "a.key",
                              "--format", "json")
    assert status == 0, err
    from_image = json.loads(out)["records"]
    with VirtualBoard(bd, heapsize="24M") as vb:
        assert vb.wait_ready()
        snap_small = ex.read_device(vb.pty_path, chunk=7)   # several chunks
        status, out, err = export(capsys, keyset, "--port", vb.pty_path, "--key", images / "a.key",
                                  "--format", "json")
        assert status == 0, err
        from_port = json.loads(out)["records"]
        status, _, err = export(capsys, keyset, "--port", vb.pty_path, "--key-dir", bd / "keys")
        assert status == 0, err
    # The booted meter appended at least its boot event; everything before it is the image's.
    assert len(from_port) > len(from_image)
    assert from_port[:len(from_image)] == from_image
    assert from_port[len(from_image)]["event"] == "boot"
    assert [s for s, _ in snap_small.records][:len(from_image)] == [r["seq"] for r in from_image]
    assert snap_small.records[:len(from_image)] == ex.read_image(images / "A.img").records
