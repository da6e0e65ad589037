"""OTA end to end with the host tools a release engineer uses (keys new, ota trust, bundle build/sign/show,
ota push, id): a good signed bundle boots from its slot and identifies as the bundle; a forged bundle
(one byte changed, in the signed manifest or in a file) is refused and the old app keeps running; an app
that crashes at import is rolled back to the previous slot after its trial boots."""
import time

import pytest
import rig as hil
from meterctl import boards

TRIAL_BOOTS = 3          # SLOTS.md section 3: trial boots allowed, default per install


def _confirm(rig):
    """The app ends its trial itself once healthy (metering, a record sealed; SLOTS.md section 6)."""
    rig.wait_status(lambda s: s["windows"] >= 2 and s["records_stored"] >= 1 and s["refusal"] is None
                    and not s.get("software_id", {}).get("trial", True),
                    "a healthy app that confirmed its trial (windows computed, a record sealed)", timeout=60)
    ident = rig.identity()
    assert not ident["trial"], ident
    return ident


def _push(rig, bundle_file):
    return hil.meterctl("ota", "push", "--port", rig.port, bundle_file, "--timeout", rig.timeout)


def _version(tag):
    """A version no slot holds yet (a device refuses the app already installed); at most 32 bytes."""
    return "hil-%s-%d" % (tag, int(time.time() * 1000) % 10 ** 10)


@pytest.fixture(scope="module")
def good(rig, deployed):
    """A good bundle installed, booted and confirmed: {'bundle', 'software_id', 'version', 'identity'}."""
    if rig.lacks("ota_key"):
        pytest.skip(rig.lacks("ota_key"))
    signer = hil.Signer(rig.ota_key, rig.work_dir)
    ident = rig.identity()
    if ident.get("security_counter") is None:  # a fresh board: provision its update trust store once
        arch = boards.get(rig.board).arch or "py"
        hil.meterctl_ok("ota", "trust", "--port", rig.port, "--board", rig.board, "--arch", arch,
                        "--pubkey", signer.pub, "--policy", "ed25519")
        ident = rig.identity()
    counter = max(1, ident["security_counter"])  # never raise a real rig's counter needlessly
    version = _version("good")
    bundle, sid = signer.bundle(rig.board, version, counter)
    code, out, err = _push(rig, bundle)
    assert code == 0 and sid in out, out + err
    rig.reset()
    booted = rig.identity()
    assert booted["mode"] == "slot" and booted["version"] == version and booted["trial"], booted
    confirmed = _confirm(rig)
    return {"bundle": bundle, "software_id": sid, "version": version, "identity": confirmed,
            "signer": signer, "counter": counter}


@pytest.mark.hil_needs("ota_key")
def test_good_bundle_boots_from_its_slot_and_meters(rig, good):
    ident = good["identity"]
    assert ident["mode"] == "slot" and ident["version"] == good["version"], ident
    where = rig.exec("import umeter.app\nprint(umeter.app.__file__)").strip()
    assert "slot_%s/" % ident["slot"] in where, where   # the app runs from the slot, not from /umeter
    rig.wait_windows(more=2)


@pytest.mark.hil_needs("ota_key")
def test_software_id_matches_the_bundle(rig, good):
    show = hil.meterctl_ok("bundle", "show", good["bundle"])
    shown = {line.split(None, 1)[0]: line.split()[-1] for line in show.splitlines() if line.strip()}
    out = hil.meterctl_ok("id", "--port", rig.port)
    assert "software id    %s" % good["software_id"] in out, out
    ident = rig.identity()
    assert ident["software_id"] == good["software_id"] == hil.software_id_of(good["bundle"])
    assert ident["version"] == shown["version"] and ident["manifest_counter"] == int(shown["counter"])
    assert ident["security_counter"] >= good["counter"], ident


@pytest.mark.hil_needs("ota_key")
@pytest.mark.parametrize("where", ["manifest", "payload"])
def test_forged_bundle_is_refused_and_the_old_app_keeps_running(rig, good, where, tmp_path):
    before = rig.identity()
    version = _version("forged-" + where[0])
    signed, _ = good["signer"].bundle(rig.board, version, good["counter"])
    # manifest: a letter of the version (still a valid manifest); payload: a byte inside the last file
    offset = hil.manifest_offset(signed, version) if where == "manifest" else -100
    forged = hil.forge(signed, offset, tmp_path / "forged.bnd")
    code, out, err = _push(rig, forged)
    assert code == 2 and "the device refused the bundle" in err, out + err
    assert ("does not verify" if where == "manifest" else "SHA-256 does not match the manifest") in err, err
    print("%s byte changed: %s" % (where, err.strip().splitlines()[-1]))
    rig.reset()
    after = rig.identity()
    keep = ("mode", "slot", "version", "software_id", "trial")
    assert {k: after[k] for k in keep} == {k: before[k] for k in keep}, (before, after)
    assert after["counts"]["rejected"] == before["counts"]["rejected"] + 1, after["counts"]
    rig.wait_windows(more=2)


@pytest.mark.hil_needs("ota_key")
def test_crashing_app_is_rolled_back_to_the_previous_slot(rig, good, tmp_path):
    before = rig.identity()
    crash_fw = hil.crashing_firmware(tmp_path / "crash-firmware")
    bundle, sid = good["signer"].bundle(rig.board, _version("crash"), good["counter"], firmware=crash_fw)
    code, out, err = _push(rig, bundle)
    assert code == 0 and sid in out, out + err
    seen = []
    for _ in range(TRIAL_BOOTS + 2):  # a real board resets itself after a failed trial boot; this one
        rig.reset()                   # reset is then just one more boot
        ident = rig.identity()
        seen.append((ident["slot"], ident["version"], ident["trial"], ident.get("attempts_left")))
        if ident["software_id"] == before["software_id"] and not ident["trial"]:
            break
    after = rig.identity()
    assert after["slot"] == before["slot"] and after["software_id"] == before["software_id"], seen
    assert after["version"] == before["version"] and not after["trial"], after
    counts0, counts1 = before["counts"], after["counts"]
    assert counts1["rollbacks"] == counts0["rollbacks"] + 1, (counts0, counts1)
    assert counts1["boot_failed"] >= counts0["boot_failed"] + 1, (counts0, counts1)
    print("boots after the crashing install (slot, version, trial, attempts left): %s" % seen)
    rig.wait_windows(more=2)
