"""`make bench-flash`: the SpiNor driver over the SPI NOR simulator, on the MicroPython unix port.

For each chip model (W25Q16JV, W25Q64JV, W25Q128JV) it prints
- host-side throughput of the simulation through the driver (read, page program, sector erase), and
- the simulated time per operation (modelled BUSY, and the whole driver call on the simulated bus
  clock: command bytes, WREN, status polls) next to the datasheet typical/maximum figures.

This one file is both sides: under CPython `main()` starts the unix port on this file; under
MicroPython it runs the measurement. Only figures are printed, nothing is asserted. `--short` measures
1/16 of the amounts (a run-to-the-end check for `make test`).
"""
import sys
import time

CHIPS = ("W25Q16JV", "W25Q64JV", "W25Q128JV")
READ_BYTES = 1024 * 1024      # read in 4 KB chunks
PROGRAM_PAGES = 256           # 64 KB in 256-byte pages
ERASE_SECTORS = 16            # 64 KB in 4 KB sectors
HEAPSIZE = "48M"              # the W25Q128JV model holds a 16 MiB array
SHORT_DIVISOR = 16


def _measure(name, timing, div=1):
    import gc

    from sim.nor import read_time_us
    from sim.spi import SpiNorSim
    from umeter.hal.spi_nor import SpiNor

    gc.collect()
    sim = SpiNorSim(name, timing=timing)
    nor = SpiNor(sim.spi, sim.cs, sleep_us=sim.sleep_us, ticks_us=sim.ticks_us)
    ss, ps = nor.sector_size, nor.page_size
    out = {"name": name, "timing": timing}

    # The garbage collector is paused while timing: with a 16 MiB array on the heap its sweeps would
    # dominate and vary with heap layout, and what we want is the cost of the simulation itself.
    erase_sectors, program_pages, read_bytes = _amounts(div)
    gc.collect()
    gc.disable()
    t0, c0 = time.ticks_us(), sim.clock_ns
    for s in range(erase_sectors):
        nor.erase_sector(s * ss)
    out["erase_host_s"] = time.ticks_diff(time.ticks_us(), t0) / 1e6
    out["erase_sim_us"] = (sim.clock_ns - c0) / 1000 / erase_sectors
    out["erase_busy_us"] = sim.last_busy_us

    page = bytes((i * 7) & 0xFF for i in range(ps))
    t0, c0 = time.ticks_us(), sim.clock_ns
    for p in range(program_pages):
        nor.program(p * ps, page)
    out["program_host_s"] = time.ticks_diff(time.ticks_us(), t0) / 1e6
    out["program_sim_us"] = (sim.clock_ns - c0) / 1000 / program_pages
    out["program_busy_us"] = sim.last_busy_us

    buf = bytearray(4096)
    t0, c0 = time.ticks_us(), sim.clock_ns
    for a in range(0, read_bytes, len(buf)):
        nor.readinto(a, buf)
    out["read_host_s"] = time.ticks_diff(time.ticks_us(), t0) / 1e6
    out["read_sim_us"] = (sim.clock_ns - c0) / 1000 / (read_bytes // len(buf))
    out["read_datasheet_us"] = read_time_us(len(buf))
    gc.enable()
    return out


def _amounts(div):
    """(sectors erased, pages programmed, bytes read) per chip, each at least one operation."""
    return max(1, ERASE_SECTORS // div), max(1, PROGRAM_PAGES // div), max(4096, READ_BYTES // div)


def _mp_main(argv):
    from sim.nor import TIMING_US

    div = SHORT_DIVISOR if "--short" in argv else 1
    erase_sectors, program_pages, read_bytes = _amounts(div)

    print("SpiNor over the SPI NOR simulator, MicroPython %s unix port; bus clock 50 MHz"
          % ".".join(str(v) for v in sys.implementation.version[:3]))
    print()
    print("Host-side throughput of the simulation through the driver")
    print("(wall clock of this machine, garbage collector paused while timing):")
    print("  %-10s %14s %16s %16s" % ("chip", "read MB/s", "program KB/s", "erase KB/s"))
    results = []
    for name in CHIPS:
        r = _measure(name, "typ", div)
        results.append(r)
        print("  %-10s %14.1f %16.1f %16.1f" % (
            name,
            read_bytes / r["read_host_s"] / 1e6,
            program_pages * 256 / r["program_host_s"] / 1e3,
            erase_sectors * 4096 / r["erase_host_s"] / 1e3))
    maxes = [_measure(name, "max", div) for name in CHIPS]
    print()
    print("Simulated time per operation (modelled BUSY | whole driver call on the simulated clock)")
    print("next to the datasheet (W25Q16JV/64JV/128JV share these figures):")
    print("  %-10s %-24s %10s %12s %10s %12s   %s" % ("chip", "operation", "busy typ", "driver typ",
                                                        "busy max", "driver max", "datasheet"))
    row = "  %-10s %-24s %7.0f us %9.0f us %7.0f us %9.0f us   %s"
    pp_sheet = "%d us typ / %d us max" % (TIMING_US["page_program_typ"], TIMING_US["page_program_max"])
    for r, m in zip(results, maxes):
        print(row % (r["name"], "page program 256 B", r["program_busy_us"], r["program_sim_us"],
                     m["program_busy_us"], m["program_sim_us"], pp_sheet))
        print(row % ("", "sector erase 4 KB", r["erase_busy_us"], r["erase_sim_us"], m["erase_busy_us"],
                     m["erase_sim_us"], "%d ms typ / %d ms max" % (TIMING_US["sector_erase_typ"] // 1000,
                                                                  TIMING_US["sector_erase_max"] // 1000)))
        print("  %-10s %-24s %10s %9.1f us %10s %12s   %s" % (
            "", "read 4 KB (0Bh, 50 MHz)", "-", r["read_sim_us"], "-", "-",
            "%.1f us (03h at 50 MHz)" % r["read_datasheet_us"]))
    print()
    print("Driver time-outs: page program %d us, sector erase %d us (twice the datasheet maximum)."
          % _timeouts())


def _timeouts():
    from umeter.hal import spi_nor

    return spi_nor.PROGRAM_TIMEOUT_US, spi_nor.ERASE_TIMEOUT_US


def main(argv=None):
    """CPython entry point: run this file on the MicroPython unix port and pass its output through."""
    import argparse
    import os
    import subprocess
    from pathlib import Path

    p = argparse.ArgumentParser(prog="python -m meterctl.bench flash", description=__doc__.splitlines()[0])
    p.add_argument("--short", action="store_true", help="1/%d of the amounts (run-to-the-end check)"
                   % SHORT_DIVISOR)
    args = p.parse_args(argv or [])
    root = Path(__file__).resolve().parents[2]
    micropython = Path(sys.executable).with_name("micropython")
    env = dict(os.environ)
    env["MICROPYPATH"] = ":".join([".frozen"] + [str(root / d) for d in ("firmware", "host_tools", "boards")])
    cmd = [str(micropython), "-X", "heapsize=" + HEAPSIZE, str(Path(__file__).resolve())]
    if args.short:
        cmd.append("--short")
    return subprocess.run(cmd, env=env, cwd=str(root)).returncode


if __name__ == "__main__":
    if sys.implementation.name == "micropython":
        _mp_main(sys.argv[1:])
    else:
        sys.exit(main(sys.argv[1:]))
