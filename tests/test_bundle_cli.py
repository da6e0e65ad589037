"""meterctl keys new --alg / bundle build, sign, verify, show end to end through the CLI (in process)."""
import hashlib
import stat

import pytest
from meterctl import bundle as host_bundle
from meterctl import signing_keys
from meterctl.cli import main
from meterctl.deploy import ARCH_CODES, ROOT

from umeter.ota import bundle as fmt

ISSUED = "1767225600"     # 2026-01-01


def run(argv, capsys):
    status = main([str(a) for a in argv])
    out = capsys.readouterr()
    return status, out.out, out.err


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    """An Ed25519 key, a small LMS key (H5/W8: 32 leaves, quick to load) and a second Ed25519 key."""
    d = tmp_path_factory.mktemp("keys")
    for name, alg in (("ed", "ed25519"), ("lms", "lms"), ("other", "ed25519")):
        extra = ["--lms-type", "h5", "--ots-type", "w8"] if alg == "lms" else []
        assert main(["keys", "new", "--alg", alg, "--out", str(d / name)] + extra) == 0
    return d


@pytest.fixture(scope="module")
def sim_bundle(tmp_path_factory):
    path = tmp_path_factory.mktemp("b") / "sim.bundle"
    assert main(["bundle", "build", "--board", "sim", "--version", "2.1.0", "--counter", "5",
                 "--issued", ISSUED, "--expires", "+3650d", "--out", str(path)]) == 0
    return path


def test_keys_new_both_algorithms(tmp_path, capsys):
    for alg, extra, pub_len in (("ed25519", [], 32), ("lms", [], 56)):
        path = tmp_path / alg
        status, out, err = run(["keys", "new", "--alg", alg, "--out", path] + extra, capsys)
        assert status == 0, err
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(signing_keys.public_path(path).stat().st_mode) == 0o644
        key = signing_keys.load(path)
        assert len(key.public_key) == pub_len
        assert key.key_id.hex() in out and key.public_key.hex() in out
        private = path.read_bytes()[6:-32]
        for secret in ((private[24:56] if alg == "lms" else private),):   # the seed
            assert secret.hex() not in out + err and secret.hex()[:16] not in out + err
        status, out, _ = run(["keys", "id", path], capsys)
        assert out.strip() == "%s %s" % (alg, key.key_id.hex())
        assert run(["keys", "id", signing_keys.public_path(path)], capsys)[1] == out
    lms = signing_keys.load(tmp_path / "lms")
    assert (lms.lms_type, lms.ots_type, lms.total) == (6, 3, 1024)      # H10 / W4 by default
    status, _, err = run(["keys", "new", "--alg", "ed25519", "--out", tmp_path / "ed25519"], capsys)
    assert status == 2 and "refusing to overwrite" in err
    with pytest.raises(SystemExit):     # argparse: invalid choice
        run(["keys", "new", "--alg", "lms", "--lms-type", "H7", "--out", tmp_path / "x"], capsys)
    assert "invalid choice: 'H7'" in capsys.readouterr().err


def test_keys_new_without_alg_still_makes_a_device_key(tmp_path, capsys):
    status, out, _ = run(["keys", "new", "--out", tmp_path / "dev.key"], capsys)
    assert status == 0 and len((tmp_path / "dev.key").read_bytes()) == 32 and "key id" in out


def test_build_for_the_virtual_board(sim_bundle, capsys):
    b = host_bundle.read(sim_bundle.read_bytes())
    m = b.manifest
    assert (m.product, m.boards, m.version, m.counter, m.arch) == ("umeter", ("sim",), "2.1.0", 5, "py")
    assert m.issued == int(ISSUED) and m.expires == int(ISSUED) + 3650 * 86400
    paths = [p for p, _, _ in m.files]
    assert "board.py" in paths and "umeter/__init__.py" in paths and "main.py" not in paths
    assert all(p.endswith(".py") for p in paths)
    at = 0
    for path, size, digest in m.files:
        source = ROOT / ("boards/sim/board.py" if path == "board.py" else "firmware/" + path)
        assert b.payload[at:at + size] == source.read_bytes()
        assert hashlib.sha256(source.read_bytes()).digest() == digest
        at += size
    assert b.entries == [] and host_bundle.payload_problem(b) is None
    status, out, _ = run(["bundle", "show", sim_bundle], capsys)
    assert status == 0
    assert "software id  %s" % hashlib.sha256(b.manifest_bytes).hexdigest() in out
    assert "unsigned" in out and "umeter/app.py" in out and "matches the manifest" in out


def test_build_for_esp32_compiles_for_xtensawin(tmp_path, capsys):
    out_path = tmp_path / "esp.bundle"
    status, out, err = run(["bundle", "build", "--board", "esp32_devkitc", "--version", "2.1.0",
                            "--counter", 6, "--out", out_path], capsys)
    assert status == 0, err
    assert "building" in err and "xtensawin" in err
    b = host_bundle.read(out_path.read_bytes())
    assert b.manifest.arch == "xtensawin" and b.manifest.boards == ("esp32_devkitc",)
    paths = [p for p, _, _ in b.manifest.files]
    assert "board.py" in paths and "umeter/__init__.mpy" in paths
    assert all(p.endswith(".mpy") for p in paths if p != "board.py")
    at, native = 0, 0
    for path, size, _ in b.manifest.files:
        blob = b.payload[at:at + size]
        at += size
        if path.endswith(".mpy"):
            assert blob[0:1] == b"M"
            if blob[2] >> 2:
                native += 1
                assert blob[2] >> 2 == ARCH_CODES["xtensawin"], path
    assert native > 0     # the viper kernels are compiled for the ESP32's CPU
    assert b.manifest.expires - b.manifest.issued == 365 * 86400


def test_sign_and_verify_ed25519_lms_and_hybrid(keys, sim_bundle, tmp_path, capsys):
    ed, lms = keys / "ed", keys / "lms"
    for name, key_args, policy in (("ed", ["--key", ed], "ed25519"), ("lms", ["--key", lms], "lms"),
                                   ("hybrid", ["--key", ed, "--key", lms], "hybrid")):
        out_path = tmp_path / (name + ".bundle")
        status, out, err = run(["bundle", "sign"] + key_args + [sim_bundle, "-o", out_path], capsys)
        assert status == 0, err
        b = host_bundle.read(out_path.read_bytes())
        assert b.manifest_bytes == host_bundle.read(sim_bundle.read_bytes()).manifest_bytes
        status, out, err = run(["bundle", "verify", "--pubkey", keys / "ed.pub", keys / "lms.pub",
                                "--policy", policy, out_path], capsys)
        assert status == 0, err
        assert out.startswith("OK: ") and fmt.software_id(b.manifest_bytes) in out
        status, out, _ = run(["bundle", "show", out_path], capsys)
        assert out.count("signature    ") == len(key_args) // 2
    status, _, err = run(["bundle", "verify", "--pubkey", keys / "ed.pub", "--policy", "hybrid",
                          tmp_path / "ed.bundle"], capsys)
    assert status == 2 and "policy hybrid needs an lms signature" in err
    status, _, err = run(["bundle", "verify", "--pubkey", keys / "ed.pub", sim_bundle], capsys)
    assert status == 2 and "unsigned" in err
    # Signing a signed bundle adds entries; the same key twice is refused.
    status, _, err = run(["bundle", "sign", "--key", ed, tmp_path / "hybrid.bundle", "-o", tmp_path / "x"],
                         capsys)
    assert status == 2 and "signed this bundle already" in err and not (tmp_path / "x").exists()
    status, _, err = run(["bundle", "sign", "--key", keys / "other", tmp_path / "hybrid.bundle",
                          "-o", tmp_path / "three.bundle"], capsys)
    assert status == 0 and len(host_bundle.read((tmp_path / "three.bundle").read_bytes()).entries) == 3


def flip(data, at):
    bad = bytearray(data)
    bad[at] ^= 0x01
    return bytes(bad)


def test_tampering_and_wrong_keys_are_refused_with_a_reason(keys, sim_bundle, tmp_path, capsys):
    ed, lms = keys / "ed", keys / "lms"
    signed = tmp_path / "hybrid.bundle"
    assert run(["bundle", "sign", "--key", ed, "--key", lms, sim_bundle, "-o", signed], capsys)[0] == 0
    data = signed.read_bytes()
    b = host_bundle.read(data)
    mlen = len(b.manifest_bytes)
    sig_at = 14 + mlen + 1 + 11                     # first entry's signature bytes (Ed25519)
    lms_at = sig_at + 64 + 11 + 40                  # inside the LMS signature's y values
    payload_at = len(data) - len(b.payload)
    counter_at = b.manifest_bytes.index(b"\x04\x00\x04") + 3 + 14 + 3
    cases = [(flip(data, counter_at), "Ed25519 signature does not verify"),
             (flip(data, 14 + mlen - 9), "Ed25519 signature does not verify"),   # board.py's SHA-256
             (flip(data, 14 + mlen - 1), "manifest: no board.py"),                 # board.py -> board.px
             (flip(data, sig_at + 5), "Ed25519 signature does not verify"),
             (flip(data, lms_at), "LMS signature (leaf"),
             (flip(data, payload_at + 10), "does not match its SHA-256"),
             (data[:-1], "truncated in"), (data + b"\x00", "bundle longer than its manifest says"),
             (data[:100], "shorter than its header"), (flip(data, 0), "bad magic")]
    pubs = [keys / "ed.pub", keys / "lms.pub"]
    for bad, why in cases:
        path = tmp_path / "bad.bundle"
        path.write_bytes(bad)
        status, out, err = run(["bundle", "verify", "--pubkey"] + pubs + [path], capsys)
        assert status == 2 and why in err and err.count("\n") == 1 and out == "", (why, err)
    status, _, err = run(["bundle", "verify", "--pubkey", keys / "other.pub", keys / "lms.pub", signed],
                         capsys)
    assert status == 2 and "not among the given public keys" in err
    assert signing_keys.load(ed).key_id.hex() in err
    status, _, err = run(["bundle", "verify", "--pubkey", keys / "ed.pub", signed], capsys)
    assert status == 2 and "lms key" in err and "not among" in err


def test_build_options_and_errors(keys, tmp_path, capsys):
    out_path = tmp_path / "k.bundle"
    status, _, err = run(["bundle", "build", "--board", "sim", "--version", "1", "--counter", 1,
                          "--policy", "hybrid", "--add-key", keys / "lms.pub",
                          "--revoke-key", keys / "other.pub",
                          "--issued", "2026-01-01", "--expires", "2027-01-01", "--out", out_path], capsys)
    assert status == 0, err
    m = host_bundle.read(out_path.read_bytes()).manifest
    assert m.policy == fmt.POLICY_HYBRID and m.issued == 1767225600 and m.expires == 1798761600
    ops = [(op, alg) for op, alg, _ in m.key_ops]
    assert ops == [(fmt.KEY_ADD, fmt.ALG_LMS), (fmt.KEY_REVOKE, fmt.ALG_ED25519)]
    shown = run(["bundle", "show", out_path], capsys)[1]
    assert "key add      lms %s" % signing_keys.load(keys / "lms").key_id.hex() in shown
    for change, why in (({"--board": "nosuch"}, "unknown board"),
                        ({"--expires": "2020-01-01"}, "not after ISSUED"),
                        ({"--expires": "soon"}, "cannot read time"), ({"--counter": 1 << 32}, "does not fit"),
                        ({"--version": "1 0"}, "VERSION has a byte 0x20")):
        options = {"--board": "sim", "--version": "1", "--counter": 1, "--out": tmp_path / "e"}
        options.update(change)
        status, _, err = run(["bundle", "build"] + [x for kv in options.items() for x in kv], capsys)
        assert status == 2 and why in err and not (tmp_path / "e").exists(), (why, err)
    status, _, err = run(["bundle", "show", tmp_path / "missing"], capsys)
    assert status == 2 and "cannot read" in err
