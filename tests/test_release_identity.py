"""A release is what the device runs (issue 14): `make release BOARD=sim` with throwaway keys (the release
module, as tests/test_release.py calls it), then a virtual board running that bundle, as a release
engineer does it: `meterctl ota trust` with the release's THROWAWAY-*.pub keys (policy hybrid, as the
release is signed), `ota push` of the bundle, a reset into its trial boot, the app confirming the trial
once healthy, another reset, then `meterctl id --json`.

Checked: the SBOM validates against the CycloneDX 1.6 schema (offline); the device's SHA-256 of every
file in its running slot equals the SBOM's hash of that file (no file missing, none extra); the software
id the device reports (version, security counter, manifest SHA-256) equals the release's software-id.json
and the SBOM's; the slot's MANIFEST is the bundle's signed head; the MicroPython the SBOM says the bundle
targets is the one the device runs."""
import hashlib
import json
import socket
import subprocess
import time

import pytest

from meterctl import deploy, ota_push, release, release_sbom
from meterctl.cli import main as meterctl_main
from meterctl.remote import Remote
from meterctl.vboard import VirtualBoard

ROOT = deploy.ROOT
BOARD = "sim"

def meterctl(capsys, *args):
    code = meterctl_main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def _no_network(*args, **kwargs):
    raise AssertionError("the schema validation tried to open a network connection")


def _wait_confirmed(vb, capsys, timeout=60):
    """The status once the app ran healthy (windows computed, a record sealed) and confirmed its trial."""
    deadline = time.monotonic() + timeout
    while True:
        code, out, err = meterctl(capsys, "status", "--port", vb.pty_path, "--json")
        if code == 0:
            st = json.loads(out)
            if st["windows"] >= 2 and st["software_id"].get("trial") is False:
                return st
        assert time.monotonic() < deadline, "the app did not confirm its trial: %s" % (out + err)[-600:]
        time.sleep(0.3)


def test_the_device_runs_exactly_the_release(tmp_path, capsys, monkeypatch):
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                            check=True).stdout.strip()
    t0 = time.monotonic()
    d = release.build(BOARD, out=tmp_path / "dist", throwaway=True, rev=commit, log=lambda text: None)
    built = time.monotonic() - t0
    bundle_data = (d / (d.name + ".bundle")).read_bytes()
    software = json.loads((d / "software-id.json").read_text())
    text = (d / "sbom.cdx.json").read_text()
    monkeypatch.setattr(socket, "socket", _no_network)
    assert release_sbom.validate(text) is None
    monkeypatch.undo()
    sbom = json.loads(text)
    sbom_files = {}
    for c in sbom["components"]:
        if c["type"] == "file":
            (h,) = c["hashes"]
            assert h["alg"] == "SHA-256", c
            sbom_files[c["name"]] = h["content"]
    props = {p["name"]: p["value"] for p in sbom["metadata"]["component"]["properties"]}
    assert sbom_files and props["umeter:software_id"] == software["software_id"]
    pubs = sorted(d.glob("THROWAWAY-*.pub"))
    assert [p.name.split("-")[1] for p in pubs] == ["ed25519", "lms"]

    board_dir = tmp_path / "board"
    board_dir.mkdir()
    (board_dir / "main.py").write_text("print('bare board')\n")
    with VirtualBoard(board_dir, heapsize="24M", env={"UMETER_SIM_SPEED": "20"}) as vb:
        assert vb.wait_ready()
        code, out, err = meterctl(capsys, "ota", "trust", "--port", vb.pty_path, "--board", BOARD,
                                  "--arch", software["arch"], "--pubkey", *pubs, "--policy", "hybrid")
        assert code == 0 and "policy hybrid" in out, out + err
        t1 = time.monotonic()
        sid, sessions, _ = ota_push.push(vb.pty_path, bundle_data, timeout=30)
        pushed = time.monotonic() - t1
        assert sid == software["software_id"] and sessions == 1
        (board_dir / "main.py").unlink()   # power-on runs the boot stage (firmware/main.py) from now on
        vb.restart()
        assert vb.wait_ready(30)
        code, out, err = meterctl(capsys, "id", "--port", vb.pty_path, "--json")
        assert code == 0 and json.loads(out)["trial"], out + err
        _wait_confirmed(vb, capsys)
        vb.restart()                       # the confirmed app boots again from its slot
        assert vb.wait_ready(30)

        code, out, err = meterctl(capsys, "id", "--port", vb.pty_path, "--json")
        assert code == 0, err
        ident = json.loads(out)
        assert ident["mode"] == "slot" and not ident["trial"], ident
        assert {k: ident[k] for k in ("version", "security_counter", "software_id")} == \
            {k: software[k] for k in ("version", "security_counter", "software_id")}, (ident, software)
        assert ident["manifest_counter"] == software["security_counter"]
        slot = "slot_%s/" % ident["slot"]
        with Remote(vb.pty_path, timeout=30) as dev:
            device = deploy.device_hashes(dev, slot)
            runtime = dev.exec("import sys\nprint('%d.%d.%d' % sys.implementation.version[:3])").strip()
        head, _ = ota_push.split(bundle_data)
        manifest = device.pop("MANIFEST")
        assert manifest == hashlib.sha256(head).hexdigest()   # the slot keeps the bundle's signed head
        differ = sorted(p for p in device if device[p] != sbom_files.get(p))
        assert device == sbom_files, {"only on the device": sorted(set(device) - set(sbom_files)),
                                      "only in the SBOM": sorted(set(sbom_files) - set(device)),
                                      "different": differ}
    mp = next(c for c in sbom["components"] if c["name"] == "micropython")
    assert mp["version"].split("-")[0] == runtime, (mp["version"], runtime)  # the MicroPython it targets
    print("release %s (%d files) built in %.1f s, pushed in %.1f s; device id %s"
          % (d.name, len(sbom_files), built, pushed, ident["software_id"][:16]))


if __name__ == "__main__":
    raise SystemExit(pytest.main([__file__]))
