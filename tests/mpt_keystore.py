# Keystore on the unix port: file backend (simulator), RP2040 backend (same files), ESP32 backend against a
# stand-in esp32.NVS with NVS semantics (commit, ENOENT-style errors, buffer size).
import os
import sys

from mptest import raises, tmpdir
from umeter.crypto import KeyMissing

KEY1 = bytes(range(32))
KEY2 = bytes(range(50, 82))


class FakeNVS:
    """esp32.NVS: committed state survives 'reboots' (new NVS objects); uncommitted writes do not."""
    flash = {}

    def __init__(self, namespace):
        self.ns = namespace
        self.pending = dict(FakeNVS.flash.get(namespace, {}))

    def set_blob(self, key, value):
        assert len(key) <= 15
        self.pending[key] = bytes(value)

    def get_blob(self, key, buf):
        if key not in self.pending:
            raise OSError(-0x1102, "ESP_ERR_NVS_NOT_FOUND")
        v = self.pending[key]
        if len(v) > len(buf):
            raise OSError(-0x110C, "ESP_ERR_NVS_INVALID_LENGTH")
        buf[:len(v)] = v
        return len(v)

    def erase_key(self, key):
        if key not in self.pending:
            raise OSError(-0x1102, "ESP_ERR_NVS_NOT_FOUND")
        del self.pending[key]

    def commit(self):
        FakeNVS.flash[self.ns] = dict(self.pending)


class FakeEsp32:
    NVS = FakeNVS


def file_store(sub="ks"):
    from umeter.hal.keystore_file import open_keystore
    return open_keystore(tmpdir() + "/" + sub)


def exercise(open_store):
    ks = open_store()
    assert not ks.provisioned
    for call in (lambda: ks.epoch, lambda: ks.master_for(1), lambda: ks.rotate(), ks.require):
        with raises(KeyMissing, match="no device key is provisioned"):
            call()
    assert ks.mark() is None
    assert ks.provision(KEY1) == 1
    ks = open_store()  # reboot
    assert ks.provisioned and ks.epoch == 1 and ks.master_for(1) == KEY1
    assert ks.rotate() == 2 and ks.master_for(2) == KEY1
    assert ks.rotate(KEY2) == 3
    ks = open_store()
    assert ks.epoch == 3
    assert [ks.master_for(e) for e in (1, 2, 3)] == [KEY1, KEY1, KEY2]
    with raises(KeyMissing, match="epoch 4"):
        ks.master_for(4)
    with raises(KeyMissing, match="epoch 0"):
        ks.master_for(0)
    ks.set_mark(123456789012, b"\xAA" * 16)
    assert open_store().mark() == (123456789012, b"\xAA" * 16)
    ks.clear_mark()
    assert open_store().mark() is None
    return ks


def test_file_backend_provision_rotate_mark_persist():
    exercise(file_store)


def test_rp2_backend_is_a_directory_on_the_internal_filesystem():
    from umeter.hal import keystore_rp2
    exercise(lambda: keystore_rp2.open_keystore(tmpdir() + "/rp2keys"))
    assert sorted(os.listdir(tmpdir() + "/rp2keys")) == ["keys.bin"]


def test_esp32_backend_on_nvs_semantics():
    sys.modules["esp32"] = FakeEsp32
    from umeter.hal import keystore_esp32
    exercise(lambda: keystore_esp32.open_keystore("umeter_test"))
    assert sorted(FakeNVS.flash["umeter_test"]) == ["keys"]
    b = keystore_esp32.NvsBackend("other")
    assert b.load("keys") is None
    b.save("keys", b"x" * 600)  # larger than any real entry: a read error, not a silent 'missing'
    from umeter.hal.keystore import KeystoreError
    with raises(KeystoreError, match="cannot read"):
        b.load("keys")


def test_no_default_key_and_clear_refusals():
    from umeter.hal.keystore import KeystoreError
    ks = file_store()
    with raises(KeystoreError, match="32 bytes"):
        ks.provision(b"short")
    with raises(KeystoreError, match="32 bytes"):
        ks.provision(None)
    ks.provision(KEY1, epoch=5)
    assert ks.epoch == 5
    with raises(KeystoreError, match="already provisioned") as e:
        ks.provision(KEY2)
    assert KEY1.hex() not in str(e.value) and KEY2.hex() not in str(e.value)
    assert ks.key_id() in str(e.value) and ks.key_id() != KEY1.hex()[:16]
    assert KEY1.hex() not in repr(ks)


def _flip(path, at=5):
    with open(path, "rb") as f:
        blob = bytearray(f.read())
    blob[at] ^= 0x04
    with open(path, "wb") as f:
        f.write(blob)


def test_damaged_keys_are_reported_never_used_and_never_stop_the_meter():
    d = tmpdir() + "/dmg"
    ks = file_store("dmg")
    ks.provision(KEY1)
    _flip(d + "/keys.bin")
    ks = file_store("dmg")  # opening never raises: the meter must still meter
    assert not ks.provisioned and "damaged" in ks.damage["keys"] and "meterctl provision" in ks.damage["keys"]
    with raises(KeyMissing, match="damaged"):
        ks.require()
    with open(d + "/keys.bin", "wb") as f:
        f.write(b"")
    assert "keys" in file_store("dmg").damage


def test_mark_two_copies_survive_one_damaged_copy_and_never_move_back():
    from umeter.hal.keystore import KeystoreError
    d = tmpdir() + "/hwm"
    ks = file_store("hwm")
    assert ks.high_water() is None and ks.mark() is None
    ks.advance_mark(10, b"\x01" * 16, epoch=3, registers={"1.8.0": 5000, "2.8.0": 7})
    ks.advance_mark(20, b"\x02" * 16, epoch=3, registers={"1.8.0": 6000, "2.8.0": 7})
    m = file_store("hwm").high_water()
    assert (m.seq, m.epoch, m.registers) == (20, 3, {"1.8.0": 6000, "2.8.0": 7})
    newest = "hwm1" if m.generation == 2 else "hwm0"
    _flip(d + "/" + newest + ".bin")
    m = file_store("hwm").high_water()  # the older copy: a lower floor, never garbage, never "no mark"
    assert (m.seq, m.registers["1.8.0"]) == (10, 5000)
    with raises(ValueError, match="cannot lower register 1.8.0"):
        ks.advance_mark(30, b"\x03" * 16, epoch=3, registers={"1.8.0": 4999})
    with raises(ValueError, match="cannot move back"):
        ks.advance_mark(5, b"\x03" * 16, epoch=3, registers={"1.8.0": 5000})
    # a later key epoch is a later position even with a lower seq (the flash was rolled back)
    ks.advance_mark(5, b"\x04" * 16, epoch=4, registers={"1.8.0": 6100})
    m = file_store("hwm").high_water()
    assert (m.epoch, m.seq, m.registers) == (4, 5, {"1.8.0": 6100, "2.8.0": 7})
    _flip(d + "/hwm0.bin")
    _flip(d + "/hwm1.bin")
    with raises(KeystoreError, match="damaged"):
        file_store("hwm").high_water()


def test_registers_beyond_2_to_40_mwh_fit_the_mark_and_nonsense_is_refused():
    from umeter.hal.keystore import KeystoreError
    ks = file_store("big")
    big = (1 << 48) + 12345
    ks.advance_mark(1, b"\x05" * 16, epoch=1, registers={"1.8.0": big})
    assert file_store("big").high_water().registers["1.8.0"] == big
    with raises(KeystoreError, match="out of range"):
        ks.advance_mark(2, b"\x05" * 16, epoch=1, registers={"1.8.0": 1 << 64})
    assert file_store("big").high_water().registers["1.8.0"] == big


def test_revision_1_mark_is_read_then_replaced():
    import struct
    from umeter.hal.keystore import _seal_blob
    ks = file_store("v1")
    with open(tmpdir() + "/v1/mark.bin", "wb") as f:
        f.write(_seal_blob(struct.pack(">QB", 77, 16) + b"\x07" * 16))
    assert file_store("v1").mark() == (77, b"\x07" * 16)
    ks.advance_mark(78, b"\x08" * 16, epoch=2, registers={"1.8.0": 1})
    assert sorted(os.listdir(tmpdir() + "/v1")) == ["hwm0.bin"]


def test_tamper_log_lasts_and_only_acknowledge_ends_active():
    d = tmpdir() + "/tl"
    ks = file_store("tl")
    assert not ks.tamper_log().active and ks.tamper_log().count == 0
    for i in range(6):
        assert ks.record_tamper(i + 1, epoch=9, seq_a=(1 << 47) + i, seq_b=i) == i + 1
    log = file_store("tl").tamper_log()
    assert log.active and log.count == 6 and [e[0] for e in log.events] == [3, 4, 5, 6]
    assert log.events[-1] == (6, 9, (1 << 47) + 5, 5)
    ks.acknowledge_tamper()
    log = file_store("tl").tamper_log()
    assert not log.active and log.count == 6 and len(log.events) == 4
    ks.record_tamper(7)
    assert file_store("tl").tamper_log().active
    _flip(d + "/tamp0.bin")
    _flip(d + "/tamp1.bin")
    log = file_store("tl").tamper_log()
    assert log.active and log.damaged and log.count >= 1


def test_keystore_is_a_sealing_keyring():
    from umeter.crypto import seal
    ks = file_store()
    ks.provision(KEY1)
    s = seal.Sealer(ks, ks.epoch)
    r1 = s.seal(1, b"before rotation")
    s.rotate(ks.rotate(KEY2))
    r2 = s.seal(2, b"after rotation")
    op = seal.Opener(file_store())  # after a reboot
    assert op.open(1, r1) == b"before rotation" and op.open(2, r2) == b"after rotation"
    with raises(KeyMissing):
        seal.Sealer(file_store("empty"), 1)


def _erase_keys_on(open_store):
    """erase_keys after three epochs, a mark and a tamper event: no key, the mark and the tamper log as
    they were, repeatable, and (the reset having noted the epoch first) the next key starts above 3."""
    from umeter.console import mode
    ks = open_store()
    ks.provision(KEY1)
    ks.rotate()
    ks.rotate(KEY2)
    ks.advance_mark(7, b"\x5A" * 16, 3, {"1.8.0": 99})
    ks.record_tamper(2, 3, 7, 1)
    mark, log = ks.high_water(), ks.tamper_log()
    mode.begin_reset(ks)  # notes epoch 3 in `rstnote` before anything is wiped
    assert ks.erase_keys() == 3
    assert not ks.provisioned and ks.last_epoch == 0
    for ks in (ks, open_store()):  # in RAM and after a reboot
        assert not ks.provisioned and ks.damage == {}
        with raises(KeyMissing, match="no device key is provisioned"):
            ks.require()
        m = ks.high_water()
        assert (m.seq, m.tag, m.epoch, m.registers) == (mark.seq, mark.tag, mark.epoch, mark.registers)
        t = ks.tamper_log()
        assert (t.count, t.acked, t.events) == (log.count, log.acked, log.events) and t.active
    assert ks.erase_keys() == 0 and not open_store().provisioned  # repeatable
    assert mode.next_epoch(ks) == 4
    assert ks.provision(KEY2, mode.next_epoch(ks)) == 4
    ks = open_store()
    assert ks.epoch == 4 and ks.master_for(4) == KEY2
    with raises(KeyMissing):
        ks.master_for(3)  # the old keys are gone for good
    return ks


def test_erase_keys_file_and_rp2_backends():
    from umeter.hal import keystore_rp2
    _erase_keys_on(lambda: file_store("erase"))
    _erase_keys_on(lambda: keystore_rp2.open_keystore(tmpdir() + "/rp2erase"))
    assert "keys.bin" in os.listdir(tmpdir() + "/rp2erase")


def test_erase_keys_on_nvs_semantics():
    sys.modules["esp32"] = FakeEsp32
    from umeter.hal import keystore_esp32
    _erase_keys_on(lambda: keystore_esp32.open_keystore("umeter_erase"))
    assert "keys" in FakeNVS.flash["umeter_erase"] and "rstnote" in FakeNVS.flash["umeter_erase"]


def test_erase_keys_clears_a_damaged_entry_and_a_cut_keeps_every_key():
    d = tmpdir() + "/erdmg"
    ks = file_store("erdmg")
    ks.provision(KEY1)
    _flip(d + "/keys.bin")
    ks = file_store("erdmg")
    assert "keys" in ks.damage and not ks.provisioned
    assert ks.erase_keys() == 0 and ks.damage == {} and file_store("erdmg").damage == {}
    # a power cut at the erase (the backend raises): nothing changed, the next boot erases again
    ks.provision(KEY1, 5)

    class Cut:
        def __init__(self, inner):
            self.inner = inner

        def load(self, name):
            return self.inner.load(name)

        def erase(self, name):
            raise OSError("power cut")

    from umeter.hal.keystore import KeyStore
    from umeter.hal.keystore_file import FileBackend
    cut = KeyStore(Cut(FileBackend(d)))
    with raises(OSError):
        cut.erase_keys()
    again = file_store("erdmg")
    assert again.provisioned and again.epoch == 5 and again.erase_keys() == 5
    assert not file_store("erdmg").provisioned
