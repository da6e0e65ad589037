"""Signed OTA on the MicroPython unix port, both lanes: CPython signs the bundles with fresh keys
(cryptography, pyhsslms) and writes them as files; tests/mpt_ota_device.py installs and boots them
through the real boot stage (firmware/main.py): mutations refused with their reasons, trial boot and
rollback, boot-stage tamper detection, a power cut at every flash operation of an update on littlefs over
the NOR simulator, random cuts during a download with resume."""
import json
import os
import subprocess

import pytest

import ota_cases as oc
from mpplugin import ROOT, TESTS, lane_binary, lanes, micropython_path
from umeter.ota import bundle


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    d = tmp_path_factory.mktemp("ota_cases")
    ed, lms, rogue = oc.EdKey(), oc.LmsKey(), oc.EdKey()
    hybrid = [ed, lms]
    b = {
        "v1": oc.make(oc.app_files("1.0"), hybrid, version="1.0", counter=1),
        "v2": oc.make(oc.app_files("2.0"), hybrid, version="2.0", counter=2),
        "v3": oc.make(oc.app_files("3.0"), hybrid, version="3.0", counter=2),
        "crash": oc.make(oc.app_files("c", crash=True), hybrid, version="c", counter=2),
        "big": oc.make(oc.app_files("big", pad=40000), hybrid, version="big", counter=2),
    }
    rejected = []

    def reject(name, data, reason):
        b[name] = data
        rejected.append((name, reason))

    files = oc.app_files("2.9")
    reject("bad_board", oc.make(files, hybrid, version="2.9", counter=2,
                                boards=("esp32_devkitc", "rp2040_pico")),
           "bundle is for board(s) esp32_devkitc, rp2040_pico, this is sim")
    reject("replay_v1", b["v1"], "security counter 1 below the installed 2")
    reject("expired", oc.make(files, hybrid, version="2.9", counter=2, issued=oc.ISSUED - 1000,
                              expires=oc.ISSUED - 10), "bundle expired")
    reject("unknown_key", oc.make(files, [rogue, lms], version="2.9", counter=2), "unknown ed25519 key")
    reject("ed_only", oc.make(files, [ed], version="2.9", counter=2), "policy hybrid needs a valid lms")
    m = oc.manifest_for(files, version="2.9", counter=2)
    other = oc.manifest_for(files, version="2.8", counter=2)
    wrong = bundle.encode_sigblock([(ed.alg, ed.kid, ed.sign(bundle.signed_message(m))),
                                    (lms.alg, lms.kid, lms.sign(bundle.signed_message(other)))])
    payload = b"".join(files.values())
    reject("wrong_lms", oc.assemble(m, wrong, payload), "signature by lms key")
    reject("below_floor", oc.make(files, hybrid, version="2.9", counter=2, policy=bundle.POLICY_ED25519),
           "policy ed25519 below the device's floor lms")
    longer = "bundle longer than its manifest says"
    for i, (version, tail, reason) in enumerate([("2.1", None, "bundle truncated"), ("2.2", b"\x00", longer),
                                                 ("2.3", b"#extra.py\n", longer)]):
        whole = oc.make(oc.app_files(version), hybrid, version=version, counter=2)
        reject("payload%d" % i, whole[:-1] if tail is None else whole + tail, reason)
    m = oc.manifest_for(oc.app_files("2.4"), version="2.4", counter=2)
    bad = b"".join(oc.app_files("2.4").values()).replace(b"app 2.4", b"app 6.6")
    reject("corrupt_file", oc.assemble(m, oc.sigblock_for(m, hybrid), bad), "SHA-256 does not match")
    # single-byte changes, a sample (every byte: tests/test_ota_install.py on CPython)
    sig = oc.sigblock_for(m, hybrid)
    good_payload = b"".join(oc.app_files("2.4").values())
    at_version = m.index(b"2.4")
    for name, mm, ss, reason in [
            ("flip_manifest_version", b"\x02" + m[1:], sig, "unknown manifest version"),
            ("flip_manifest_text", m[:at_version] + b"2.5" + m[at_version + 3:], sig, "does not verify"),
            ("flip_ed_sig", m, sig[:20] + bytes([sig[20] ^ 1]) + sig[21:], "signature by ed25519 key"),
            ("flip_lms_sig", m, sig[:-300] + bytes([sig[-300] ^ 0x40]) + sig[-299:], "signature by lms key"),
            ("flip_sig_count", m, b"\x05" + sig[1:], "5 signatures, at most 4")]:
        reject(name, oc.assemble(mm, ss, good_payload), reason)
    # key rotation: add ed2 and revoke ed (signed by ed + lms); afterwards ed is refused, ed2 accepted
    ed2 = oc.EdKey()
    b["rotate"] = oc.make(oc.app_files("4.0"), hybrid, version="4.0", counter=2,
                          key_ops=[(bundle.KEY_ADD, ed2.alg, ed2.public),
                                   (bundle.KEY_REVOKE, ed.alg, ed.public)])
    b["after_old_key"] = oc.make(oc.app_files("5.0"), hybrid, version="5.0", counter=2)
    b["after_new_key"] = oc.make(oc.app_files("5.0"), [ed2, lms], version="5.0", counter=2)
    oc.write_case_dir(str(d), b, oc.trust_json(hybrid, policy=bundle.POLICY_HYBRID, floor=bundle.POLICY_LMS))
    (d / "expect.json").write_text(json.dumps({"rejected": rejected}))
    return d


def run_scenario(lane, name, cases, tmp_path, timeout=120):
    """Run one scenario; the boot stage prints the tracebacks of crashing apps, so success is the exit
    status and the runner's MPT-PASS line, not the absence of a traceback."""
    env = dict(os.environ, MICROPYPATH=micropython_path(), MPT_TMPDIR=str(tmp_path), OTA_CASES=str(cases),
               OTA_MAIN=str(ROOT / "firmware" / "main.py"))
    proc = subprocess.run([lane_binary(lane), "-X", "heapsize=8M", str(TESTS / "mp_runner.py"),
                           "mpt_ota_device", name], capture_output=True, text=True, env=env,
                          cwd=str(tmp_path), timeout=timeout * (3 if lane == "mp32" else 1))
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "MPT-PASS" in out, out[-6000:]
    return out


@pytest.mark.parametrize("lane", lanes())
def test_install_reject_trial_tamper(lane, cases, tmp_path):
    out = run_scenario(lane, "scenario_install_reject_trial_tamper", cases, tmp_path)
    assert "MPT-PASS" in out and "unverified development deploy" not in out, out
    assert "umeter: slot a verified: app 1.0, security counter 1, trial boot" in out, out
    assert "umeter: safe state, no verified app to start:" in out


@pytest.mark.parametrize("lane", lanes())
def test_power_cut_at_every_flash_operation(lane, cases, tmp_path):
    out = run_scenario(lane, "scenario_power_cut_every_flash_op", cases, tmp_path)
    print([line for line in out.splitlines() if line.startswith("power cuts:")])


@pytest.mark.parametrize("lane", lanes())
def test_random_cuts_during_download(lane, cases, tmp_path):
    out = run_scenario(lane, "scenario_random_cuts_during_download", cases, tmp_path)
    print([line for line in out.splitlines() if line.startswith("random cuts")])


@pytest.mark.parametrize("lane", lanes())
def test_key_rotation_and_revocation(lane, cases, tmp_path):
    run_scenario(lane, "scenario_key_rotation", cases, tmp_path)
