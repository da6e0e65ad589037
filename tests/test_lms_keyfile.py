"""LMS private key files: a one-time leaf is never used twice, whatever step of `meterctl bundle sign` a
crash interrupts (a hard crash: the process dies there, no cleanup runs), nor by two signers at once; the
tree warns near its end and refuses when exhausted; damaged or loose key files are refused."""
import os
import stat

import pytest
from meterctl import bundle as host_bundle
from meterctl import signing_keys
from meterctl.cli import main

from umeter.ota import bundle as fmt

CRASH_STATUS = 77


@pytest.fixture(scope="module")
def unsigned(tmp_path_factory):
    path = tmp_path_factory.mktemp("u") / "sim.bundle"
    assert main(["bundle", "build", "--board", "sim", "--version", "1", "--counter", "1",
                 "--out", str(path)]) == 0
    return path


def new_key(path, lms_type="H5"):
    return signing_keys.new(path, "lms", lms_type, "W4")   # H5/W4: the tree takes ~25 ms


def leaves(bundle_path):
    b = host_bundle.read(bundle_path.read_bytes())
    return [fmt.lms_signature_info(sig)[0] for alg, _, sig in b.entries if alg == fmt.ALG_LMS]


def next_q(path):
    return signing_keys.load(path).next_q


def sign_in_child(argv, crash_at=None):
    """Run `meterctl` argv in a forked child; with crash_at = (step name, occurrence) the child dies with
    os._exit at that step. Returns the child's exit status."""
    pid = os.fork()
    if pid == 0:   # child
        status = 1
        try:
            seen = {}

            def step(name):
                seen[name] = seen.get(name, 0) + 1
                if crash_at == (name, seen[name]):
                    os._exit(CRASH_STATUS)

            signing_keys._step = step
            write = host_bundle.write_file

            def write_file(path, data):
                step("bundle-write")
                write(path, data)
                step("bundle-written")

            host_bundle.write_file = write_file
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.dup2(devnull, 2)
            status = main(argv)
        finally:
            os._exit(status if isinstance(status, int) else 1)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def steps_of_one_sign(argv):
    """The step names one clean `bundle sign` passes, in order (recorded in process)."""
    names = []
    saved = signing_keys._step, host_bundle.write_file
    write = host_bundle.write_file

    def write_file(path, data):
        names.append("bundle-write")
        write(path, data)
        names.append("bundle-written")

    signing_keys._step = names.append
    host_bundle.write_file = write_file
    try:
        assert main(argv) == 0
    finally:
        signing_keys._step, host_bundle.write_file = saved
    return names


def test_no_leaf_is_reused_across_a_crash_at_every_step(unsigned, tmp_path, capsys):
    key = tmp_path / "lms.key"
    new_key(key)
    ed = tmp_path / "ed.key"
    signing_keys.new(ed, "ed25519")
    out = tmp_path / "out.bundle"
    argv = ["bundle", "sign", "--key", str(ed), "--key", str(key), str(unsigned), "-o", str(out)]
    steps = steps_of_one_sign(argv)
    capsys.readouterr()
    # The reservation is durable before the signature exists: every file step precedes "signed".
    order = [steps.index(name) for name in ("tmp-synced", "renamed", "dir-synced", "reserved", "signed",
                                            "bundle-write")]
    assert order == sorted(order)
    released = leaves(out)
    points, counts = [], {}
    for name in steps:
        counts[name] = counts.get(name, 0) + 1
        points.append((name, counts[name]))
    for point in points:
        before = next_q(key)
        out.unlink(missing_ok=True)
        assert sign_in_child(argv, crash_at=point) == CRASH_STATUS, point
        after = next_q(key)
        assert after in (before, before + 1), point
        # The leaf counts as used from the rename on: the on-disk index never falls behind a signature.
        assert after == before + (steps.index(point[0]) >= steps.index("renamed")), point
        if out.exists():                       # only a crash after the bundle was renamed into place
            released += leaves(out)
        # And the key still signs, with a fresh leaf, after the crash (and clears a temporary it left).
        out.unlink(missing_ok=True)
        assert sign_in_child(argv) == 0
        released += leaves(out)
        assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")], point
        assert max(released) < next_q(key)
    assert len(released) == len(set(released)), released
    assert len(released) >= len(points)


def test_an_error_while_saving_the_index_releases_no_signature(unsigned, tmp_path, monkeypatch, capsys):
    key = tmp_path / "lms.key"
    new_key(key)
    out = tmp_path / "out.bundle"

    def disk_full(name):
        if name == "tmp-written":
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(signing_keys, "_step", disk_full)
    status = main(["bundle", "sign", "--key", str(key), str(unsigned), "-o", str(out)])
    err = capsys.readouterr().err
    assert status == 2 and "No space left on device" in err and not out.exists()
    assert next_q(key) == 0 and sorted(os.listdir(tmp_path)) == ["lms.key", "lms.key.pub"]
    monkeypatch.undo()
    assert main(["bundle", "sign", "--key", str(key), str(unsigned), "-o", str(out)]) == 0
    assert leaves(out) == [0] and next_q(key) == 1


def test_the_same_key_twice_is_refused_before_any_leaf_is_used(unsigned, tmp_path, capsys):
    key = tmp_path / "lms.key"
    new_key(key)
    status = main(["bundle", "sign", "--key", str(key), "--key", str(key), str(unsigned), "-o",
                   str(tmp_path / "out")])
    assert status == 2 and "given twice" in capsys.readouterr().err and next_q(key) == 0


def test_two_signers_at_once_never_share_a_leaf(tmp_path):
    key = tmp_path / "lms.key"
    new_key(key)
    pids = []
    for child in range(2):
        pid = os.fork()
        if pid == 0:
            try:
                k = signing_keys.load(key)
                qs = [fmt.lms_signature_info(k.sign(b"m%d" % i)[0])[0] for i in range(6)]
                (tmp_path / ("q%d" % child)).write_text(" ".join(map(str, qs)))
            finally:
                os._exit(0)
        pids.append(pid)
    for pid in pids:
        os.waitpid(pid, 0)
    qs = [int(q) for child in range(2) for q in (tmp_path / ("q%d" % child)).read_text().split()]
    assert sorted(qs) == list(range(12)) and next_q(key) == 12


def test_exhaustion_warns_then_refuses(unsigned, tmp_path, capsys):
    key = tmp_path / "lms.key"
    k = new_key(key)
    for _ in range(27):          # use up the first 27 of 32 leaves directly
        k.sign(b"x")
    out = tmp_path / "out.bundle"
    argv = ["bundle", "sign", "--key", str(key), str(unsigned), "-o", str(out)]
    lines = []
    for left in (4, 3, 2, 1, 0):
        assert main(argv) == 0
        o = capsys.readouterr()
        assert "(%d of 32 one-time signatures left)" % left in o.out
        lines.append(o.err)
    assert "warning" not in lines[0]                        # 4 left: not yet under 10 %
    assert "only 3 of 32 signatures left" in lines[1] and "only 1 of 32" in lines[3]
    assert "now exhausted" in lines[4]
    assert leaves(out) == [31]
    out.unlink()
    assert main(argv) == 2
    assert "is exhausted (all 32 one-time signatures used)" in capsys.readouterr().err and not out.exists()
    assert next_q(key) == 32


def test_damaged_or_loose_key_files_are_refused(tmp_path):
    key = tmp_path / "lms.key"
    new_key(key)
    good = key.read_bytes()
    key.chmod(0o640)
    with pytest.raises(signing_keys.SigningKeyError, match="chmod 600"):
        signing_keys.load(key)
    key.chmod(0o600)
    for at in (0, 5, 30, len(good) - 40, len(good) - 1):
        bad = bytearray(good)
        bad[at] ^= 0x01
        key.write_bytes(bytes(bad))
        with pytest.raises(signing_keys.SigningKeyError, match="damaged|not a signing key|unknown"):
            signing_keys.load(key)
    key.write_bytes(good[:-1])
    with pytest.raises(signing_keys.SigningKeyError, match="damaged"):
        signing_keys.load(key)
    # A consistent file whose seed does not give its public key (e.g. two files spliced): refused at use.
    fields = bytearray(good[6:-32])
    fields[24] ^= 0x01
    key.write_bytes(signing_keys._private_bytes(fmt.ALG_LMS, bytes(fields)))
    with pytest.raises(signing_keys.SigningKeyError, match="seed does not give its public key"):
        signing_keys.load(key).sign(b"m")
    assert stat.S_IMODE(key.stat().st_mode) == 0o600


def test_tree_progress_is_reported_and_the_library_left_as_it_was(tmp_path):
    import pyhsslms

    original = pyhsslms.LmotsPrivateKey.publicKey
    seen = []
    key = signing_keys.new(tmp_path / "k", "lms", "H5", "W4",
                           progress=lambda done, total: seen.append((done, total)))
    assert seen[-1] == (32, 32) and [d for d, _ in seen] == sorted(d for d, _ in seen) and len(seen) == 32
    assert pyhsslms.LmotsPrivateKey.publicKey is original
    seen.clear()
    signing_keys.load(key.path).tree(progress=lambda done, total: seen.append(done))
    assert seen[-1] == 32 and pyhsslms.LmotsPrivateKey.publicKey is original
