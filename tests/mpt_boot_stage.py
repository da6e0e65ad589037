# The boot stage's safe state (firmware/main.py, SLOTS.md section 6) on a board whose two app slots both
# fail verification, booted as the virtual board boots it: a child MicroPython process runs
# host_tools/vboard/boardfs.py (main.py, then the unix port's REPL, exactly as on the virtual board) with
# a file of REPL bytes as its line. A locked board (production, damaged mode, reset under way) answers
# only console frames: hello gets the public line, anything else a "safe state" error frame, and none of
# the REPL bytes reaches Python. A development board keeps its REPL (the same bytes run there).
import os
import sys

from mptest import tmpdir
from umeter.console import framing, mode, roles
from umeter.console.rolekeys import RoleKeys
from umeter.hal.keystore import KeyStore
from umeter.hal.keystore_file import FileBackend
from umeter.ota import bundle, slots, trust

# Ctrl-C, raw REPL (Ctrl-A) + a statement + Ctrl-D, paste mode (Ctrl-E), friendly REPL (Ctrl-B), plain lines
REPL_BYTES = (b"\r\x03\x03\x01print(6*7007)\x04\x05print(6*7007)\x04\x02\r\nprint(6*7007)\r\n"
              b"import sys\r\nprint(sys.platform + 'PWNED')\r\n")
HELLO = framing.encode(roles.HELLO, 1)
STATUS = framing.encode(roles.CODES["status"], 2)
LOGIN = framing.encode(roles.AUTH_BEGIN, 3, bytes((roles.ADMIN,)))


def _source_dir(name):
    for d in (os.getenv("MICROPYPATH") or "").split(":"):
        try:
            os.stat(d + "/" + name)
            return d
        except OSError:
            pass
    raise AssertionError("%s not on MICROPYPATH" % name)


def _write(path, data):
    with open(path, "wb") as f:
        f.write(data)


def corrupted_board(name):
    """A board directory with two slots that were installed (trust provisioned, both digests pinned) and
    are now both unverifiable: the boot stage must enter its safe state (slots.NoApp)."""
    d = tmpdir() + "/" + name
    os.mkdir(d)
    for s in ("slot_a", "slot_b"):
        os.mkdir(d + "/" + s)
        _write(d + "/" + s + "/MANIFEST", b"garbage, not a signed manifest")
        _write(d + "/" + s + "/board.py", b"print('UNVERIFIED BOARD RAN')\n")
    ota = FileBackend(d + "/ota")
    trust.provision(ota, "sim", "x64", [(bundle.ALG_ED25519, bytes(range(32)))], bundle.POLICY_ED25519,
                    bundle.POLICY_ED25519)
    st = slots.BootState()
    st.active, st.previous = 0, 1
    st.digests = [b"\x01" * 32, b"\x02" * 32]
    st.counts[slots.COUNTERS.index("installed")] = 2
    slots.save(ota, st)
    _write(d + "/board.py", b"print('UNVERIFIED BOARD RAN')\n")  # a deployed /board.py is never imported
    return d


def power_on(d, line):
    """Boot `d` as the virtual board does, `line` as everything the serial line brings; the output."""
    _write(d + "/line.in", line)
    exe = sys.executable
    # '' right after the script's directory on sys.path: the board's root, as in the vboard's sandbox
    cmd = ("cd '%s' && env -u UMETER_KEYS_DIR -u UMETER_BOARD_DIR -u MICROPYINSPECT UMETER_VB_NO_SANDBOX=1 "
           "MICROPYPATH='::%s' UMETER_VB_MAIN='%s/main.py' '%s' -X heapsize=4M '%s/vboard/boardfs.py' "
           "< line.in > line.out 2>&1; echo $? > rc"
           % (d, os.getenv("MICROPYPATH"), _source_dir("main.py"), exe, _source_dir("vboard/boardfs.py")))
    os.system(cmd)
    with open(d + "/line.out", "rb") as f:
        out = f.read()
    with open(d + "/rc") as f:
        rc = int(f.read())
    return rc, out


def frames(out):
    """Every console frame in `out`, and whether `out` is made of frames and nothing else."""
    got = list(framing.Decoder().feed(out, 0))
    size = sum(framing.frame_size(len(f.payload), f.mac is not None) for f in got if not isinstance(f, int))
    return got, size == len(out)


def assert_locked(d, mode_name, why="safe state: no verified app"):
    rc, out = power_on(d, REPL_BYTES + HELLO + REPL_BYTES + STATUS + LOGIN)
    assert rc == 0, (rc, out)
    for text in (b"42042", b"PWNED", b">>>", b"raw REPL", b"Traceback", b"MicroPython", b"UNVERIFIED",
                 b"safe state, no verified app"):
        assert text not in out, (text, out)
    got, only = frames(out)
    assert only, out  # nothing but frames on the line
    assert [(f.command, f.seq) for f in got] == [(roles.HELLO, 1), (roles.CODES["status"], 2),
                                                (roles.AUTH_BEGIN, 3)], got
    hello, status, login = got
    assert not hello.flags & framing.FLAG_ERROR
    parts = hello.payload.decode().split("|")
    assert parts[0] == "umeter" and parts[1] == "safe-state" and parts[3] == mode_name, parts
    for f in (status, login):  # no command and no login in the safe state: only its error frame
        assert f.flags & framing.FLAG_ERROR
        code, _, text = framing.parse_error(f.payload)
        assert code == framing.ERR_UNSUPPORTED and text.startswith(why), text
    return out


def test_production_board_with_both_slots_corrupted_keeps_the_repl_closed():
    d = corrupted_board("prod")
    keys = FileBackend(d + "/keys")
    mode.save(keys, mode.PRODUCTION, mode.FLAG_UNPROTECTED_OK)
    assert_locked(d, "production")
    assert slots.pending_events(FileBackend(d + "/ota"))[-1][1] == "no_app"  # why, for the app to seal
    # a damaged mode blob is locked too
    blob = bytearray(keys.load(mode.MODE_BLOB))
    blob[1] ^= 0x40
    keys.save(mode.MODE_BLOB, bytes(blob))
    assert_locked(d, "production")


def test_reset_under_way_in_the_safe_state_wipes_the_keys_and_stays_locked():
    d = corrupted_board("resetting")
    keys = FileBackend(d + "/keys")
    ks = KeyStore(keys)
    ks.provision(bytes(range(32)), 6)
    ks.advance_mark(3, b"t" * 16, 6, {"1.8.0": 5})
    RoleKeys(keys).set_key(roles.ADMIN, b"\x33" * 32)
    mode.save(keys, mode.PRODUCTION)
    mode.begin_reset(ks)
    assert_locked(d, "resetting")
    ks = KeyStore(keys)
    assert not ks.provisioned and ks.high_water() is None and RoleKeys(keys).roles() == []
    assert mode.load(keys).mode == mode.RESETTING  # the stores wait for a verified app to finish it
    assert mode.next_epoch(ks) == 7


def test_development_board_with_both_slots_corrupted_keeps_its_repl():
    d = corrupted_board("dev")
    rc, out = power_on(d, b"print(6*7007)\r\n")
    assert rc == 0, (rc, out)
    assert b"umeter: safe state, no verified app to start:" in out and b"42042" in out, out
    assert b"UNVERIFIED" not in out


def test_locked_development_deploy_that_fails_to_start_never_opens_the_repl():
    # no slots: the deployed /board.py starts the app; here it raises at import, then it is missing
    d = tmpdir() + "/deploy"
    os.mkdir(d)
    _write(d + "/board.py", b"raise ValueError('secret-ish detail')\n")
    mode.save(FileBackend(d + "/keys"), mode.PRODUCTION)
    out = assert_locked(d, "production", "safe state: no verified app: start failed (ValueError)")
    assert b"secret-ish" not in out  # an exception's message is never told before authentication
    os.remove(d + "/board.py")
    assert_locked(d, "production", "safe state: no verified app: no board.py on this device")
    mode.set_development(FileBackend(d + "/keys"))
    rc, out = power_on(d, b"print(6*7007)\r\n")
    assert b"no board.py on this device" in out and b"42042" in out, out


def test_safe_console_answers_only_hello_under_noise():
    from umeter.console.serve import SafeConsole
    now = [0]
    c = SafeConsole(b"umeter|safe-state|x|production", "slot a: changed", ticks_ms=lambda: now[0])
    x = 12345
    noise = bytearray(4000)
    for i in range(len(noise)):  # a fixed pseudo-random flood, start bytes and all
        x = (x * 1103515245 + 12345) & 0x3FFFFFFF
        noise[i] = (x >> 16) & 0xFF
    stream = bytes(noise) + HELLO + bytes(noise[:50]) + STATUS + framing.encode(roles.HELLO, 9)[:-1]
    out = bytearray()
    at = 0
    while at < len(stream):
        n = 1 + (at * 7) % 61
        out += c.feed(stream[at:at + n])
        at += n
        now[0] += 1
    now[0] += framing.FRAME_TIMEOUT_MS + 1
    out += c.poll()  # the truncated last frame times out
    got, only = frames(bytes(out))
    assert only
    answers = [f for f in got if not isinstance(f, int)]
    hellos = [f for f in answers if not f.flags & framing.FLAG_ERROR]
    assert [h.payload for h in hellos] == [b"umeter|safe-state|x|production"] and hellos[0].seq == 1
    for f in answers:
        if f.flags & framing.FLAG_ERROR:
            code, _, text = framing.parse_error(f.payload)
            assert code != framing.ERR_UNSUPPORTED or text == "safe state: no verified app: slot a: changed"
    assert any(f.command == roles.CODES["status"] and f.seq == 2 for f in answers)
