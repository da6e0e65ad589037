# OTA install and boot-stage benchmark, MicroPython unix port (littlefs over the NOR simulator; vfs.VfsLfs2
# is not in CPython). Driven by meterctl/bench_ota_install.py, which signs the bundles under CPython:
#     micropython ota_install_bench.py MODE BUNDLE TRUST_JSON [IMAGE [CHUNK]]   MODE: all | install | boot
# Prints one JSON line of figures (no assertions). "install" and "boot" run one step only, so the host
# can look for the smallest heap each one completes in (the peak heap need, all modules loaded).
import gc
import json
import os
import sys
import time

NOR_BYTES = 2 * 1024 * 1024


def mount(image=None, fresh=True, nor_bytes=NOR_BYTES):
    """littlefs on a simulated NOR mounted at /flash (cwd), and the update-state backend on it: the RP2040
    layout (slots, trust and boot state on the internal filesystem). image: a file-backed NOR (the image
    costs no heap: for the smallest-heap runs), else in RAM."""
    import vfs
    from sim.blockdev import NorBlockDev
    from sim.nor import NorFlash
    from umeter.hal.keystore_file import FileBackend

    nor = NorFlash(nor_bytes, seed=1, path=image)
    bdev = NorBlockDev(nor)
    if fresh:
        vfs.VfsLfs2.mkfs(bdev)
    vfs.mount(vfs.VfsLfs2(bdev), "/flash")
    os.chdir("/flash")
    return nor, FileBackend("ota")


def provision(backend, trust_path):
    from umeter.ota import trust

    with open(trust_path) as f:
        t = json.load(f)
    trust.provision(backend, t["board"], t["arch"], [(a, bytes.fromhex(p)) for a, p in t["keys"]],
                    t["policy"], t["floor"])


def install(bundle_path, backend, nor, chunk=1024):
    """Stream the bundle file into the installer: figures of the host time, the simulated flash's
    modelled busy time, and the high-water of heap in use above the start (sampled after every chunk,
    garbage included: an upper bound; the smallest-heap runs give the real need)."""
    from umeter.ota import bundle
    from umeter.ota.install import Installer, head_length

    buf = bytearray(chunk)
    mv = memoryview(buf)
    nor.reset_stats()
    gc.collect()
    base = gc.mem_alloc()
    high = base
    t0 = time.ticks_us()
    with open(bundle_path, "rb") as f:
        first = f.read(bundle.HEADER_LEN)
        head = first + f.read(head_length(first) - bundle.HEADER_LEN)
        inst = Installer("", backend)
        t_head = time.ticks_us()
        inst.begin(head)
        t_begin = time.ticks_diff(time.ticks_us(), t_head)
        payload = 0
        while True:
            n = f.readinto(buf)
            if not n:
                break
            inst.write(mv[:n])
            payload += n
            used = gc.mem_alloc()
            if used > high:
                high = used
        sid = inst.finish()
    host_us = time.ticks_diff(time.ticks_us(), t0)
    st = nor.stats()
    return {"software_id": sid, "payload_bytes": payload, "head_bytes": len(head), "host_ms": host_us / 1000,
            "head_verify_ms": t_begin / 1000, "heap_high_water": high - base,
            "flash_bytes_programmed": st["bytes_programmed"], "flash_erases": st["erases"],
            "flash_busy_ms": st["busy_us"] / 1000}


def boot_verify(backend, runs=5):
    """The boot stage's check of the active slot (manifest signature, pinned digest, every file hashed):
    time per run (the first, trial, boot is confirmed and not timed)."""
    from umeter.ota import slots

    buf = bytearray(1024)
    times = []
    slots.select("", backend, buf)  # the trial boot (modules imported), then confirmed: no more writes
    slots.confirm("", backend)
    for _ in range(runs):
        t0 = time.ticks_us()
        slots.select("", backend, buf)
        times.append(time.ticks_diff(time.ticks_us(), t0) / 1000)
    return {"boot_verify_ms_min": min(times), "boot_verify_ms_mean": sum(times) / len(times)}


def posix_boot_verify(bundle_path, trust_path, chunk):
    """The same install + boot verification on the host's filesystem (no NOR simulator in Python under
    littlefs): what the verifier itself costs, closer to a port whose filesystem is C all the way down."""
    from umeter.hal.keystore_file import FileBackend

    d = "/tmp/umeter_ota_bench_%d" % (time.ticks_us() & 0xFFFFFF)
    os.mkdir(d)
    os.chdir(d)
    backend = FileBackend("ota")
    provision(backend, trust_path)

    class _NoStats:
        def reset_stats(self):
            pass

        def stats(self):
            return {"bytes_programmed": 0, "erases": 0, "busy_us": 0}

    r = install(bundle_path, backend, _NoStats(), chunk)
    b = boot_verify(backend, 5)
    return {"posix_install_ms": r["host_ms"], "posix_boot_verify_ms_mean": b["boot_verify_ms_mean"],
            "posix_boot_verify_ms_min": b["boot_verify_ms_min"], "posix_dir": d}


def main(argv):
    """all: install + 5 boot verifications, NOR in RAM. install / boot IMAGE:
    one step on a file-backed NOR image (boot: the image an install run left), for smallest-heap runs."""
    mode, bundle_path, trust_path = argv[0], argv[1], argv[2]
    image = argv[3] if len(argv) > 3 else None
    chunk = int(argv[4]) if len(argv) > 4 else 1024
    out = {"lane": "%d-bit" % (64 if sys.maxsize > 2 ** 32 else 32), "chunk": chunk, "mode": mode}
    if mode == "boot":
        nor, backend = mount(image, fresh=False)
        out.update(boot_verify(backend, 1))
    else:
        nor, backend = mount(image if mode == "install" else None)
        provision(backend, trust_path)
        gc.collect()
        out.update(install(bundle_path, backend, nor, chunk))
        if mode == "all":
            gc.collect()
            out.update(boot_verify(backend, 5))
            out.update(posix_boot_verify(bundle_path, trust_path, chunk))
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1:])
