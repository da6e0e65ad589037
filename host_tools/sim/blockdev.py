"""A littlefs block device (MicroPython `vfs` extended block protocol) over a flash device of DESIGN 3.1.

    bdev = NorBlockDev(NorFlash(2 * 1024 * 1024))
    vfs.VfsLfs2.mkfs(bdev); fs = vfs.VfsLfs2(bdev)

Blocks are the flash's erase sectors. writeblocks only programs (split at page boundaries); littlefs
erases through ioctl(6), so the simulator's counters see exactly what the file system does.
"""


class NorBlockDev:
    def __init__(self, dev):
        self.dev = dev
        self.bs = dev.sector_size
        self.count = dev.size // dev.sector_size

    def readblocks(self, block, buf, offset=0):
        addr = block * self.bs + offset
        rd = getattr(self.dev, "readinto", None)
        if rd is not None:
            rd(addr, buf)
        else:
            buf[:] = self.dev.read(addr, len(buf))

    def writeblocks(self, block, buf, offset=None):
        if offset is None:                  # simple protocol: erase the blocks, then program them
            for i in range(len(buf) // self.bs):
                self.dev.erase_sector((block + i) * self.bs)
            offset = 0
        addr = block * self.bs + offset
        mv = memoryview(buf)
        page = self.dev.page_size
        done = 0
        n = len(mv)
        while done < n:
            k = page - (addr + done) % page
            if k > n - done:
                k = n - done
            self.dev.program(addr + done, mv[done:done + k])
            done += k

    def ioctl(self, op, arg):
        if op == 4:                         # block count
            return self.count
        if op == 5:                         # block size
            return self.bs
        if op == 6:                         # erase block arg
            self.dev.erase_sector(arg * self.bs)
            return 0
        return 0
