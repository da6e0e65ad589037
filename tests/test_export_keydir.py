"""`meterctl export --key-dir` checks the directory's modes as `--key` checks a key file's (issue 11
item 9): a key directory or key file other users can reach is refused before anything is read."""
import os

from meterctl import cli, mpcompat


def _keystore_dir(path):
    mpcompat.install()
    from umeter.hal.keystore_file import open_keystore

    open_keystore(str(path)).provision(bytes(range(32)))
    os.chmod(path, 0o700)
    for f in path.iterdir():
        os.chmod(f, 0o600)
    return path


def test_key_dir_reachable_by_others_is_refused(tmp_path, capsys):
    keys = _keystore_dir(tmp_path / "keys")
    image = tmp_path / "flash.img"
    image.write_bytes(b"\xff" * (64 * 1024))
    os.chmod(keys, 0o755)
    code = cli.main(["export", "--image", str(image), "--key-dir", str(keys)])
    err = capsys.readouterr().err
    assert code == 2 and "keys" in err and ("mode" in err or "other users" in err), err
    os.chmod(keys, 0o700)
    os.chmod(keys / "keys.bin", 0o644)
    code = cli.main(["export", "--image", str(image), "--key-dir", str(keys)])
    err = capsys.readouterr().err
    assert code == 2 and "keys.bin" in err, err
    os.chmod(keys / "keys.bin", 0o600)
    code = cli.main(["export", "--image", str(image), "--key-dir", str(keys)])
    err = capsys.readouterr().err
    assert "mode" not in err and "other users" not in err, err  # past the check: the image decides now
