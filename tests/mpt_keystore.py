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


def test_damaged_entries_are_reported_not_used():
    from umeter.hal.keystore import KeystoreError
    d = tmpdir() + "/dmg"
    ks = file_store("dmg")
    ks.provision(KEY1)
    ks.set_mark(7, b"\x01" * 16)
    for name in ("keys", "mark"):
        with open(d + "/" + name + ".bin", "rb") as f:
            blob = bytearray(f.read())
        blob[5] ^= 0x04
        with open(d + "/" + name + ".bin", "wb") as f:
            f.write(blob)
    with raises(KeystoreError, match="damaged"):
        file_store("dmg")
    with open(d + "/keys.bin", "wb") as f:
        f.write(b"")
    with raises(KeystoreError):
        file_store("dmg")


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
