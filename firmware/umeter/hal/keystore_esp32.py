# ESP32 keystore: entries are blobs in an esp32.NVS namespace (committed on every write; NVS is
# power-loss safe). Use ESP-IDF NVS encryption + flash encryption to keep them from chip readout.
import esp32
from umeter.hal.keystore import KeyStore, KeystoreError

NAMESPACE = "umeter_keys"
_MAX_BLOB = 512  # largest entry: keys with MAX_KEYS masters is 6 + 8 * 36 + 4 bytes


def _not_found(e):
    # MicroPython maps ESP_ERR_NVS_NOT_FOUND (0x1102) to an OSError carrying that code (sign varies by
    # version) or ENOENT
    code = e.args[0] if e.args else None
    return code in (2, 0x1102, -0x1102) or "NOT_FOUND" in str(e)


class NvsBackend:
    def __init__(self, namespace=NAMESPACE):
        self._nvs = esp32.NVS(namespace)
        self._buf = bytearray(_MAX_BLOB)

    def __repr__(self):
        return "<NvsBackend>"

    def load(self, name):
        try:
            n = self._nvs.get_blob(name, self._buf)
        except OSError as e:
            if _not_found(e):
                return None
            raise KeystoreError("cannot read keystore entry %r from NVS (%s)" % (name, e))
        return bytes(self._buf[:n])

    def save(self, name, data):
        self._nvs.set_blob(name, data)
        self._nvs.commit()

    def erase(self, name):
        try:
            self._nvs.erase_key(name)
            self._nvs.commit()
        except OSError as e:
            if not _not_found(e):
                raise


def open_keystore(namespace=NAMESPACE):
    return KeyStore(NvsBackend(namespace))
