# Production mode's MCU-internal state on the unix port (both lanes): the mode blob (damage never opens the
# REPL, unprotected key storage needs the acceptance), and the reset to the original state in its two
# steps: what it wipes, what it keeps, the next key epoch above every one used, and a power cut at every
# write of the boot stage's step finished by the next boot.
from mptest import raises
from mpt_console_kit import MemBackend
from state_cases import RamDev
from umeter.console import mode
from umeter.console.rolekeys import RoleKeys
from umeter.hal.keystore import KeyStore
from umeter.store.journal import Journal
from umeter.store.region import partitions
from umeter.store.state import State

HEAPSIZE = "8M"


class Board:
    PARTITIONS = [("journal", 64 * 1024), ("state", 32 * 1024)]

    def __init__(self, storage=None):
        self.dev = RamDev(bytearray(b"\xff" * (96 * 1024)))
        if storage is not None:
            self.KEY_STORAGE = storage

    def flash(self):
        return self.dev


class CutBackend(MemBackend):
    """Fails every save and erase from the n-th on (a power cut), until power_on()."""

    def __init__(self):
        super().__init__()
        self.left = -1

    def _tick(self):
        if self.left == 0:
            raise OSError("power cut")
        if self.left > 0:
            self.left -= 1

    def save(self, name, data):
        self._tick()
        super().save(name, data)

    def erase(self, name):
        self._tick()
        super().erase(name)


def test_mode_blob():
    b = MemBackend()
    m = mode.load(b)
    assert m.mode == mode.DEVELOPMENT and not m.locked and m.name == "development"
    for storage in (None, "external-unprotected", "host-file"):
        with raises(mode.ModeError):
            mode.set_production(b, Board(storage))
        assert not mode.load(b).locked
    mode.set_production(b, Board("host-file"), accept_unprotected=True)
    m = mode.load(b)
    assert m.locked and m.name == "production" and m.unprotected_ok
    mode.set_production(b, Board("internal"))
    assert mode.load(b).locked and not mode.load(b).unprotected_ok
    good = b.blobs[mode.MODE_BLOB]
    for i in range(len(good)):  # any damaged byte: locked (production), never development
        bad = bytearray(good)
        bad[i] ^= 0x10
        b.blobs[mode.MODE_BLOB] = bytes(bad)
        m = mode.load(b)
        assert m.locked and m.damaged
    b.blobs[mode.MODE_BLOB] = good[:-1]
    assert mode.load(b).locked
    mode.set_development(b)
    assert not mode.load(b).locked


def provisioned_meter(backend, board):
    ks = KeyStore(backend)
    ks.provision(bytes(range(32)), 1)
    for _ in range(3):
        ks.rotate()  # three boots: epoch 4
    rk = RoleKeys(backend)
    for role in (1, 2, 3):
        rk.set_key(role, bytes((role,)) * 32)
    rk.begin_attempt(3)  # one failed admin attempt on record
    ks.advance_mark(5, b"t" * 16, 4, {"1.8.0": 1234})
    ks.record_tamper(1, 4, 5, 3)
    parts = partitions(board.flash(), board.PARTITIONS)
    j = Journal(parts["journal"])
    for i in range(20):
        j.append(b"record %d" % i)
    st = State(parts["state"])
    st.put("cp", b"12345678")
    mode.set_production(backend, board, accept_unprotected=True)
    return ks


def check_reset_done(backend, board):
    ks = KeyStore(backend)
    assert not ks.provisioned and ks.high_water() is None
    assert RoleKeys(backend).roles() == []
    assert RoleKeys(backend).failures(3) == 1          # the failure counters stay
    log = ks.tamper_log()
    assert log.count == 1 and not log.active           # counted for life, acknowledged
    assert not mode.load(backend).locked               # development again
    note = mode.load_note(backend)
    assert note.resets == 1 and note.last_epoch == 4 and note.tamper == 1
    assert mode.next_epoch(ks) == 5                    # never epoch 1 again
    parts = partitions(board.flash(), board.PARTITIONS)
    assert Journal(parts["journal"]).last_seq == 0
    assert State(parts["state"]).get("cp") is None


def test_reset_to_original_state():
    backend, board = MemBackend(), Board("host-file")
    ks = provisioned_meter(backend, board)
    assert mode.next_epoch(ks) == 5
    backend.blobs["otatrust"] = b"security counter"
    mode.begin_reset(ks)
    assert mode.load(backend).mode == mode.RESETTING and mode.load(backend).locked
    mode.finish_reset(KeyStore(backend), board)
    check_reset_done(backend, board)
    assert backend.blobs["otatrust"] == b"security counter"
    ks = KeyStore(backend)
    ks.provision(bytes(32), mode.next_epoch(ks))
    assert ks.epoch == 5


def test_reset_power_cut_at_every_write():
    n = 0
    while True:
        backend, board = CutBackend(), Board("host-file")
        ks = provisioned_meter(backend, board)
        mode.begin_reset(ks)
        backend.left = n
        try:
            mode.finish_reset(KeyStore(backend), board)
            done = True
        except OSError:
            done = False
            assert mode.load(backend).locked  # cut: the next boot is still locked and finishes it
        backend.left = -1
        if not done:
            mode.finish_reset(KeyStore(backend), board)
        check_reset_done(backend, board)
        if done:
            break
        n += 1
    assert n >= 5


def test_reset_without_a_board_wipes_the_keys_and_stays_locked():
    # the boot stage's safe state (no verified board module): only the keystore steps, mode stays resetting
    backend, board = MemBackend(), Board("host-file")
    ks = provisioned_meter(backend, board)
    mode.begin_reset(ks)
    for _ in range(2):  # repeatable, as at every boot in the safe state
        assert mode.finish_reset(KeyStore(backend), None) is False
        ks = KeyStore(backend)
        assert not ks.provisioned and ks.high_water() is None and RoleKeys(backend).roles() == []
        assert not ks.tamper_log().active and mode.load(backend).mode == mode.RESETTING
    parts = partitions(board.flash(), board.PARTITIONS)
    assert Journal(parts["journal"]).last_seq == 20  # the stores wait for the board module
    assert mode.finish_reset(KeyStore(backend), board) is True
    check_reset_done(backend, board)


def test_boot_load_reads_the_ports_keystore_place_and_creates_nothing():
    import os
    from mptest import tmpdir
    from umeter.hal.keystore_file import FileBackend
    d = tmpdir() + "/bootkeys"
    os.putenv("UMETER_KEYS_DIR", d)
    try:
        assert mode.boot_backend() is None and not mode.boot_load().locked
        try:
            os.stat(d)
            raise AssertionError("the boot stage's read created the keystore directory")
        except OSError:
            pass
        mode.save(FileBackend(d), mode.PRODUCTION)
        m = mode.boot_load()
        assert m.locked and m.name == "production" and not m.damaged
        with open(d + "/" + mode.MODE_BLOB + ".bin", "ab") as f:
            f.write(b"x")
        assert mode.boot_load().locked and mode.boot_load().damaged
        mode.set_development(FileBackend(d))
        assert not mode.boot_load().locked
    finally:
        os.unsetenv("UMETER_KEYS_DIR")
