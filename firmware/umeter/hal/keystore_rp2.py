# RP2040 keystore: a directory on the internal flash filesystem (littlefs). The RP2040 has no flash
# encryption: anyone with SWD or BOOTSEL access can read it (out of scope per DESIGN section 4; close
# SWD/BOOTSEL access in production hardware).
from umeter.hal.keystore_file import FileBackend
from umeter.hal.keystore import KeyStore

DIRECTORY = "/keystore"


def open_keystore(directory=DIRECTORY):
    return KeyStore(FileBackend(directory))
