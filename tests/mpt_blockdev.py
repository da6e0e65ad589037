# The littlefs block-device adapter used by bench-store, on the unix port (VfsLfs2 over the NOR sim).
import vfs
from sim.blockdev import NorBlockDev
from sim.nor import NorFlash


def test_littlefs_over_nor_round_trip():
    f = NorFlash(64 * 4096)
    b = NorBlockDev(f)
    vfs.VfsLfs2.mkfs(b)
    fs = vfs.VfsLfs2(b)
    with fs.open("log", "ab") as fh:
        for i in range(50):
            fh.write(bytes([i]) * 64)
            fh.flush()
    fs2 = vfs.VfsLfs2(b)
    with fs2.open("log", "rb") as fh:
        data = fh.read()
    assert data == b"".join(bytes([i]) * 64 for i in range(50))
    assert f.stats()["erases"] > 0
