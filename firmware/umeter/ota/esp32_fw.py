# ESP32: a full MicroPython image update behind the same bundle signature (SLOTS.md section 8). The
# bundle is an ordinary app bundle whose first FILE is `firmware.bin`: the image streams into the next
# OTA app partition in 4 KB blocks (one block in RAM), hashed by the installer like every file, and the
# app files that match the new image go into the inactive slot. After the slot switch (the installer's
# commit point) the partition is made the boot one. At the reset the bootloader runs it pending
# verification (CONFIG_BOOTLOADER_APP_ROLLBACK_ENABLE) and the boot stage runs the new app in trial;
# the app's confirmation calls slots.confirm() and confirm() here, else both roll back.
# Tested against a fake esp32.Partition only (tests/test_ota_esp32_fw.py), never on hardware.
from umeter.ota.install import Installer
from umeter.ota.verify import Refused

FILE = "firmware.bin"
BLOCK = 4096


def _partition_class():
    import esp32
    return esp32.Partition


class PartitionSink:
    """Where the installer streams firmware.bin: the next OTA partition, erased and written block by
    block (Partition.writeblocks with two arguments erases first)."""

    def __init__(self, partition_cls):
        self._target = partition_cls(partition_cls.RUNNING).get_next_update()
        self._buf = bytearray(BLOCK)
        self._fill = 0
        self._block = 0

    def reserve(self, size):
        capacity = self._target.ioctl(4, None) * self._target.ioctl(5, None)
        if size > capacity:
            raise Refused("image of %d bytes does not fit the %d-byte OTA partition" % (size, capacity))
        self._fill = 0
        self._block = 0

    def _flush(self):
        for i in range(self._fill, BLOCK):
            self._buf[i] = 0xFF
        self._target.writeblocks(self._block, self._buf)
        self._block += 1
        self._fill = 0

    def write(self, data):
        mv = memoryview(data)
        at = 0
        while at < len(mv):
            n = min(BLOCK - self._fill, len(mv) - at)
            self._buf[self._fill:self._fill + n] = mv[at:at + n]
            self._fill += n
            at += n
            if self._fill == BLOCK:
                self._flush()

    def flush(self):
        pass  # blocks are written whole; the installer restarts an image from byte 0 anyway

    def close(self):
        if self._fill:
            self._flush()

    def commit(self):
        self._target.set_boot()


def installer(root=None, backend=None, clock=0, partition=None):
    """An Installer (install.py) that sends firmware.bin to the next OTA partition: begin/write/finish as
    for any bundle; a bundle without firmware.bin is an ordinary app update."""
    sink = PartitionSink(partition or _partition_class())
    return Installer(root, backend, clock, external={FILE: sink})


def confirm(partition=None):
    """Cancel the bootloader's rollback of a new image (call with slots.confirm(), after the health checks;
    harmless when the running image is already valid)."""
    (partition or _partition_class()).mark_app_valid_cancel_rollback()
