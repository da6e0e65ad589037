"""ESP32 MicroPython image update (firmware/umeter/ota/esp32_fw.py) against a fake esp32.Partition (no
hardware here): a signed bundle's firmware.bin lands block by block in the next OTA partition, its app
files in the inactive slot; set_boot() only after the slot switch; a refusal never switches; the plain
installer refuses firmware.bin; confirm() cancels the rollback."""
import os

import pytest

import ota_cases as oc
from umeter.hal.keystore_file import FileBackend
from umeter.ota import esp32_fw, slots, trust
from umeter.ota.install import Installer
from umeter.ota.verify import Refused


class FakePartition:
    RUNNING = 0
    log = []
    blocks = {}

    def __init__(self, which):
        assert which == self.RUNNING

    def get_next_update(self):
        return FakeOta()

    @classmethod
    def mark_app_valid_cancel_rollback(cls):
        cls.log.append("valid")


class FakeOta:
    block_count = 64  # 256 KB

    def ioctl(self, op, arg):
        return {4: self.block_count, 5: 4096}[op]

    def writeblocks(self, n, buf):
        assert len(buf) == 4096 and 0 <= n < self.block_count
        FakePartition.blocks[n] = bytes(buf)
        FakePartition.log.append("write")

    def set_boot(self):
        FakePartition.log.append("set_boot")


@pytest.fixture
def device(tmp_path):
    FakePartition.log, FakePartition.blocks = [], {}
    key = oc.EdKey()
    backend = FileBackend(str(tmp_path / "ota"))
    trust.provision(backend, oc.BOARD, oc.ARCH, [(key.alg, key.public)], 1, 1)
    return key, backend, str(tmp_path) + "/"


def with_image(image, version="2.0"):
    files = {"firmware.bin": image}
    files.update(oc.app_files(version))
    return files


def push(inst, data, chunk=3000):
    head, payload = oc.split(data)
    assert inst.begin(head) == 0
    for i in range(0, len(payload), chunk):
        inst.write(payload[i:i + chunk])
    return inst.finish()


def test_image_goes_to_the_partition_app_to_the_slot(device):
    key, backend, root = device
    image = os.urandom(10000)
    push(esp32_fw.installer(root, backend, partition=FakePartition), oc.make(with_image(image), [key]))
    assert FakePartition.log == ["write"] * 3 + ["set_boot"]
    written = b"".join(FakePartition.blocks[i] for i in range(3))
    assert written[:10000] == image and written[10000:] == b"\xff" * (3 * 4096 - 10000)
    index, m, _ = slots.select(root, backend)    # the boot stage: the image is not looked for in the slot
    assert m.files[0][0] == "firmware.bin"
    assert not os.path.exists(slots.slot_dir(root, index) + "/firmware.bin")
    assert slots.confirm(root, backend)
    esp32_fw.confirm(partition=FakePartition)
    assert FakePartition.log[-1] == "valid"


def test_refusals_never_switch_the_boot_partition(device):
    key, backend, root = device
    image = os.urandom(5000)
    bad = oc.manifest_for(with_image(image))
    tampered = oc.assemble(bad, oc.sigblock_for(bad, [key]), b"".join(with_image(image[:-1] + b"?").values()))
    for data, reason in [(tampered, "firmware.bin: SHA-256 does not match"),
                         (oc.make(with_image(os.urandom(65 * 4096)), [key]), "does not fit"),
                         (oc.make(with_image(image), [oc.EdKey()]), "unknown ed25519 key")]:
        with pytest.raises(Refused, match=reason):
            push(esp32_fw.installer(root, backend, partition=FakePartition), data)
    with pytest.raises(Refused, match="not installed into an app slot"):
        push(Installer(root, backend), oc.make(with_image(image), [key]))
    assert "set_boot" not in FakePartition.log and slots.load(backend).active is None
