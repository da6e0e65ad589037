"""`meterctl release` (make release BOARD=B) for the virtual board and every real board, with throwaway
keys: the SBOM validates against the CycloneDX 1.6 schema (the library's validator, offline), its file
hashes are the manifest's, the software id file equals `meterctl bundle show`, the release notes are
there, and two builds of the same commit are equal (manifest + payload always; the whole bundle when the
signatures are Ed25519 from the same key file; the SBOM apart from serial number and timestamp)."""
import hashlib
import json
import socket
import subprocess

import pytest
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator

from meterctl import boards, deploy, release, release_sbom, signing_keys
from meterctl import bundle as host_bundle
from meterctl.cli import CliError
from meterctl.cli import main as meterctl_main

BOARDS = ["sim", "esp32_devkitc", "rp2040_pico", "esp32_atm90e32"]
ROOT = deploy.ROOT


@pytest.fixture(scope="module")
def commit():
    # One commit for the whole module: other work may land on HEAD while the tests run.
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                          check=True).stdout.strip()


def _two_releases(board, commit, tmp_path):
    """Two release directories of one commit, both with throwaway keys, via the CLI (make release)."""
    dirs = []
    for n in (1, 2):
        dist = tmp_path / ("dist%d" % n)
        code = meterctl_main(["release", "--board", board, "--throwaway-keys", "--commit", commit,
                              "--out", str(dist)])
        assert code == 0
        dirs.append(dist / ("%s-%s" % (board, _settings(commit)["version"])))
    return dirs


def _settings(commit):
    text = subprocess.run(["git", "show", "%s:%s" % (commit, release.RELEASE_FILE)], cwd=ROOT,
                          capture_output=True, text=True, check=True).stdout
    return json.loads(text)


def _bundle_path(d):
    return d / (d.name + ".bundle")


def _sbom(d):
    return json.loads((d / "sbom.cdx.json").read_text())


def _unsigned_part(data):
    b = host_bundle.read(data)
    return b.manifest_bytes, b.payload


def _no_network(*args, **kwargs):
    raise AssertionError("the schema validation tried to open a network connection")


# One test per board does both checks, so parallel workers (pytest -n) never build a board twice.
@pytest.mark.parametrize("board", BOARDS)
def test_release_artefacts_and_two_builds_equal(board, commit, tmp_path, capsys, monkeypatch):
    d, second = _two_releases(board, commit, tmp_path)
    _check_artefacts(board, d, commit, capsys, monkeypatch)
    _check_equal(d, second)


def _check_artefacts(board, d, commit, capsys, monkeypatch):
    names = sorted(p.name for p in d.iterdir())
    pubs = [n for n in names if n.startswith("THROWAWAY-")]
    expected = ["RELEASE-NOTES.md", "SHA256SUMS", d.name + ".bundle", "sbom.cdx.json", "software-id.json"]
    assert [n for n in names if n not in pubs] == sorted(expected)
    assert sorted(n.split("-")[1] for n in pubs) == ["ed25519", "lms"]

    # The signed bundle verifies under the throwaway public keys, hybrid policy; built from this commit.
    data = _bundle_path(d).read_bytes()
    b = host_bundle.verify(data, [signing_keys.read_public(d / n) for n in pubs], policy="hybrid")
    m = b.manifest
    settings = _settings(commit)
    assert list(m.boards) == [board] and m.version == settings["version"]
    assert m.counter == settings["security_counter"]
    assert m.arch == (boards.get(board).arch or "py")
    commit_time = int(subprocess.run(["git", "log", "-1", "--format=%ct", commit], cwd=ROOT,
                                     capture_output=True, text=True, check=True).stdout)
    assert m.issued == commit_time and m.expires == commit_time + settings["bundle_lifetime_days"] * 86400

    # SBOM: CycloneDX 1.6, valid (offline), every bundle file with the manifest's SHA-256.
    text = (d / "sbom.cdx.json").read_text()
    monkeypatch.setattr(socket, "socket", _no_network)
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(text) is None
    monkeypatch.undo()
    sbom = json.loads(text)
    assert sbom["bomFormat"] == "CycloneDX" and sbom["specVersion"] == "1.6"
    files = {c["name"]: c["hashes"] for c in sbom["components"] if c["type"] == "file"}
    assert files == {path: [{"alg": "SHA-256", "content": digest.hex()}] for path, _, digest in m.files}
    at = 0
    for path, size, digest in m.files:          # and those are the hashes of the bytes shipped
        assert hashlib.sha256(b.payload[at:at + size]).digest() == digest, path
        at += size
    app = sbom["metadata"]["component"]
    props = {p["name"]: p["value"] for p in app["properties"]}
    assert app["type"] == "firmware" and app["version"] == m.version
    assert props["umeter:software_id"] == host_bundle.fmt.software_id(b.manifest_bytes)
    assert props["umeter:security_counter"] == str(m.counter) and props["umeter:source_commit"] == commit

    # The MicroPython it targets: mpy-cross's version (real boards), the unix port's (virtual board).
    mp = next(c for c in sbom["components"] if c["name"] == "micropython")
    if m.arch == "py":
        probe = [str(deploy.Path(release.sys.executable).with_name("micropython")), "-c",
                 "import sys;print('%d.%d.%d' % sys.implementation.version[:3])"]
    else:
        probe = [deploy.find_mpy_cross(), "--version"]
    version_text = subprocess.run(probe, capture_output=True, text=True, check=True).stdout
    assert mp["version"].split("-")[0] in version_text

    # The host tools' pinned dependencies, each with its version and PyPI package URL.
    pins = release_sbom.pinned_requirements((ROOT / "requirements.txt").read_text())
    listed = {c["purl"] for c in sbom["components"] if c.get("purl", "").startswith("pkg:pypi/")}
    assert listed == {"pkg:pypi/%s@%s" % (n.lower().replace("_", "-"), v) for n, v in pins}
    assert ("cyclonedx-python-lib", "11.12.0") in pins

    # The software identification equals what `meterctl bundle show` computes from the bundle.
    ident = json.loads((d / "software-id.json").read_text())
    capsys.readouterr()
    assert meterctl_main(["bundle", "show", str(_bundle_path(d))]) == 0
    shown = dict(line.split(None, 1) if not line.startswith("software id") else ("software_id", line[12:])
                 for line in capsys.readouterr().out.splitlines() if line and not line.startswith(" "))
    assert ident["software_id"] == shown["software_id"].strip()
    assert ident["version"] == shown["version"].strip() and str(ident["security_counter"]) == shown["counter"]

    # Release notes: the id, the throwaway warning, the known vulnerabilities (none in the checked-in file).
    note = (d / "RELEASE-NOTES.md").read_text()
    assert ident["software_id"] in note and "THROWAWAY KEYS" in note
    assert "## Known vulnerabilities (CRA Annex I)" in note and "None known at release." in note
    sums = dict(reversed(line.split("  ")) for line in (d / "SHA256SUMS").read_text().splitlines())
    assert sums == {n: hashlib.sha256((d / n).read_bytes()).hexdigest() for n in names if n != "SHA256SUMS"}


def _check_equal(first, second):
    a, b = _bundle_path(first).read_bytes(), _bundle_path(second).read_bytes()
    # Fresh throwaway keys sign each build, so only the signatures may differ.
    assert _unsigned_part(a) == _unsigned_part(b)
    assert host_bundle.read(a).entries != host_bundle.read(b).entries
    assert (first / "software-id.json").read_bytes() == (second / "software-id.json").read_bytes()
    sa, sb = _sbom(first), _sbom(second)
    for s in (sa, sb):
        del s["serialNumber"], s["metadata"]["timestamp"]
    assert sa == sb


def test_ed25519_release_is_byte_identical_lms_differs_in_its_signature(commit, tmp_path, monkeypatch):
    ed = signing_keys.new(tmp_path / "ed", "ed25519")
    lms = signing_keys.new(tmp_path / "lms", "lms", "H5", "W4")
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1800000000")
    quiet = {"log": lambda text: None}
    one = release.build("esp32_devkitc", out=tmp_path / "a", key_paths=[ed.path], rev=commit, **quiet)
    two = release.build("esp32_devkitc", out=tmp_path / "b", key_paths=[ed.path], rev=commit, **quiet)
    assert _bundle_path(one).read_bytes() == _bundle_path(two).read_bytes()
    assert host_bundle.read(_bundle_path(one).read_bytes()).manifest.issued == 1800000000
    assert _sbom(one)["metadata"]["timestamp"] == "2027-01-15T08:00:00+00:00"

    both = [ed.path, lms.path]
    h1 = release.build("esp32_devkitc", out=tmp_path / "c", key_paths=both, rev=commit, **quiet)
    h2 = release.build("esp32_devkitc", out=tmp_path / "d", key_paths=both, rev=commit, **quiet)
    b1, b2 = (host_bundle.read(_bundle_path(d).read_bytes()) for d in (h1, h2))
    assert (b1.manifest_bytes, b1.payload) == (b2.manifest_bytes, b2.payload)
    assert b1.entries[0] == b2.entries[0]          # Ed25519: deterministic
    assert b1.entries[1] != b2.entries[1]          # LMS: leaf 0, then leaf 1
    assert signing_keys.load(lms.path).next_q == 2
    assert not list(tmp_path.glob("*/THROWAWAY-*"))


def test_known_vulnerabilities_are_listed_and_an_exploitable_one_stops_the_release(commit, tmp_path):
    entry = {"id": "UMETER-TEST-0001", "status": "not_affected", "summary": "test entry",
             "analysis": "the code path is not in the bundle", "affects": ["micropython"]}
    vulns = tmp_path / "vulns.json"
    vulns.write_text(json.dumps({"format": 1, "vulnerabilities": [entry]}))
    d = release.build("sim", out=tmp_path / "v", throwaway=True, rev=commit, vulnerabilities=vulns,
                      log=lambda text: None)
    text = (d / "sbom.cdx.json").read_text()
    assert release_sbom.validate(text) is None
    (listed,) = json.loads(text)["vulnerabilities"]
    assert listed["id"] == "UMETER-TEST-0001" and listed["analysis"]["state"] == "not_affected"
    assert listed["affects"] == [{"ref": "micropython"}]
    assert "**UMETER-TEST-0001** (not_affected): test entry" in (d / "RELEASE-NOTES.md").read_text()

    vulns.write_text(json.dumps({"format": 1, "vulnerabilities": [dict(entry, status="exploitable")]}))
    with pytest.raises(CliError, match="known exploitable"):
        release.build("sim", out=tmp_path / "x", throwaway=True, rev=commit, vulnerabilities=vulns,
                      log=lambda text: None)
    assert not (tmp_path / "x").exists() or not list((tmp_path / "x").iterdir())


def test_refusals(commit, tmp_path, capsys):
    assert meterctl_main(["release", "--board", "sim", "--commit", commit, "--out", str(tmp_path)]) == 2
    assert "no signing key" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())                     # nothing half-written
    assert meterctl_main(["release", "--board", "nope", "--throwaway-keys", "--commit", commit,
                          "--out", str(tmp_path)]) == 2
    assert "unknown board" in capsys.readouterr().err
    assert meterctl_main(["release", "--board", "sim", "--throwaway-keys", "--commit", "no-such-rev",
                          "--out", str(tmp_path)]) == 2
    assert "git rev-parse" in capsys.readouterr().err
    with pytest.raises(release_sbom.SbomError, match="line 2"):
        release_sbom.pinned_requirements("a==1\nb>=2\n")
