"""`meterctl keys`: new key files are 0600, the key is never printed, existing files are not overwritten."""
import os
import stat
import subprocess
import sys

import pytest
from meterctl import keys
from meterctl.cli import main


def run(argv, capsys):
    status = main(argv)
    out = capsys.readouterr()
    return status, out.out, out.err


def test_new_writes_0600_and_prints_only_the_key_id(tmp_path, capsys):
    path = tmp_path / "dev.key"
    old = os.umask(0)  # even with a permissive umask
    try:
        status, out, err = run(["keys", "new", "--out", str(path)], capsys)
    finally:
        os.umask(old)
    assert status == 0
    key = path.read_bytes()
    assert len(key) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert keys.key_id(key) in out
    for text in (out, err):
        assert key.hex() not in text and key.hex().upper() not in text and repr(key) not in text
        assert key.hex()[:8] not in text
    assert run(["keys", "id", str(path)], capsys)[1].strip() == keys.key_id(key)


def test_two_keys_differ(tmp_path, capsys):
    run(["keys", "new", "--out", str(tmp_path / "a")], capsys)
    run(["keys", "new", "--out", str(tmp_path / "b")], capsys)
    assert (tmp_path / "a").read_bytes() != (tmp_path / "b").read_bytes()


def test_overwrite_refused_without_force(tmp_path, capsys):
    path = tmp_path / "dev.key"
    run(["keys", "new", "--out", str(path)], capsys)
    before = path.read_bytes()
    status, out, err = run(["keys", "new", "--out", str(path)], capsys)
    assert status == 2 and "refusing to overwrite" in err and "--force" in err and err.count("\n") == 1
    assert path.read_bytes() == before
    status, out, err = run(["keys", "new", "--out", str(path), "--force"], capsys)
    assert status == 0 and path.read_bytes() != before
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dev.key"]  # no temporary left behind


def test_other_file_kinds_are_refused(tmp_path, capsys):
    status, _, err = run(["keys", "new", "--out", str(tmp_path)], capsys)
    assert status == 2 and "directory" in err
    status, _, err = run(["keys", "new", "--out", str(tmp_path / "missing" / "k")], capsys)
    assert status == 2 and "cannot write" in err
    loose = tmp_path / "loose.key"
    loose.write_bytes(os.urandom(32))
    loose.chmod(0o644)
    status, _, err = run(["keys", "id", str(loose)], capsys)
    assert status == 2 and "chmod 600" in err
    short = tmp_path / "short.key"
    short.write_bytes(b"x" * 10)
    short.chmod(0o600)
    with pytest.raises(keys.KeyFileError, match="not a device key file"):
        keys.read_key_file(short)


def test_console_entry_point(tmp_path):
    path = tmp_path / "k"
    proc = subprocess.run([sys.executable, "-m", "meterctl.cli", "keys", "new", "--out", str(path)],
                          capture_output=True, text=True)
    assert proc.returncode == 0 and path.read_bytes().hex() not in proc.stdout + proc.stderr


def test_signing_keys_get_the_same_care(tmp_path, capsys):
    """keys new --alg: 0600 under any umask, never overwritten without --force, no temporary left behind."""
    path = tmp_path / "sign.key"
    old = os.umask(0)
    try:
        status, out, err = run(["keys", "new", "--alg", "ed25519", "--out", str(path)], capsys)
    finally:
        os.umask(old)
    assert status == 0 and stat.S_IMODE(path.stat().st_mode) == 0o600
    seed = path.read_bytes()[6:38]
    assert seed.hex() not in out + err and seed.hex()[:8] not in out + err
    before = path.read_bytes()
    status, _, err = run(["keys", "new", "--alg", "ed25519", "--out", str(path)], capsys)
    assert status == 2 and "refusing to overwrite" in err and path.read_bytes() == before
    assert run(["keys", "new", "--alg", "ed25519", "--out", str(path), "--force"], capsys)[0] == 0
    assert path.read_bytes() != before and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sign.key", "sign.key.pub"]
    status, _, err = run(["keys", "new", "--alg", "ed25519", "--out", str(tmp_path)], capsys)
    assert status == 2 and "directory" in err
    path.chmod(0o644)
    status, _, err = run(["keys", "id", str(path)], capsys)
    assert status == 2 and "chmod 600" in err
