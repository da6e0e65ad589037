"""Static check that firmware imports only what the ESP32 and RP2040 MicroPython ports provide.

Each source file is parsed (never run); every import, at any depth, must resolve to a module of
the firmware itself or to a module in the port's stubs package (micropython-<port>-stubs, installed
by `make setup` under .venv/stubs/<port>). `from X import name` must name something the stub defines.
A file whose path names a port (``esp32``/``rp2``) is checked against that port only; files under
``boards/sim`` belong to the unix port (virtual board) and are not checked against device stubs.
"""
import ast
import sys
from pathlib import Path

PORTS = ("esp32", "rp2")
# In the stdlib stubs for type checkers only; these modules do not exist on the device.
NOT_ON_DEVICE = {"typing", "typing_extensions", "_typeshed", "abc", "enum", "types", "__future__",
                 "_ast", "_codecs", "_decimal", "_collections_abc", "sre_compile", "sre_constants",
                 "sre_parse", "ssl"}


def default_stubs_root():
    return Path(sys.prefix) / "stubs"


def ports_for(path):
    """The ports a file must import cleanly on: a port named in its path, else both."""
    parts = [p.lower() for p in Path(path).parts]
    if "sim" in parts and "boards" in parts:
        return ()
    named = [port for port in PORTS if any(port in part for part in parts)]
    return tuple(named) or PORTS


class StubIndex:
    """Resolves module names and their top-level names in one port's stubs folder."""

    def __init__(self, root):
        self.root = Path(root)
        if not (self.root / "machine.pyi").exists():
            raise FileNotFoundError("no MicroPython stubs in %s (run `make setup`)" % self.root)
        self._names = {}

    def stub_file(self, module):
        if module.split(".")[0] in NOT_ON_DEVICE:
            return None
        rel = Path(*module.split("."))
        for base in (self.root, self.root / "stdlib"):
            for cand in (base / rel.with_suffix(".pyi"), base / rel / "__init__.pyi"):
                if cand.exists():
                    return cand
        return None

    def names(self, module):
        if module not in self._names:
            tree = ast.parse(self.stub_file(module).read_text())
            found = set()
            for node in ast.walk(tree):
                if isinstance(node, (ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef)):
                    found.add(node.name)
                elif isinstance(node, ast.Assign):
                    found.update(t.id for t in node.targets if isinstance(t, ast.Name))
                elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                    found.add(node.target.id)
                elif isinstance(node, (ast.Import, ast.ImportFrom)):
                    found.update((a.asname or a.name).split(".")[0] for a in node.names)
            self._names[module] = found
        return self._names[module]


def local_module_exists(module, roots):
    rel = Path(*module.split("."))
    return any((r / rel.with_suffix(".py")).exists() or (r / rel / "__init__.py").exists() for r in roots)


def check_file(path, stubs, local_roots, ports=None):
    """Problems (strings) with the imports of one file; empty when clean."""
    problems = []
    tree = ast.parse(Path(path).read_text(), filename=str(path))
    for port in ports if ports is not None else ports_for(path):
        index = stubs[port]
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                wanted = [(a.name, None) for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                wanted = [(node.module, a.name) for a in node.names]
            else:
                continue  # relative imports stay inside the firmware package
            for module, name in wanted:
                if local_module_exists(module, local_roots) or module == "board":
                    continue
                where = "%s:%d" % (path, node.lineno)
                if index.stub_file(module) is None:
                    problems.append("%s: module %r does not exist on the %s port" % (where, module, port))
                elif name and name != "*" and name not in index.names(module) \
                        and index.stub_file(module + "." + name) is None:
                    problems.append("%s: %r is not in module %r on the %s port" % (where, name, module, port))
    return problems


def check_tree(files, stubs_root=None, local_roots=()):
    stubs_root = Path(stubs_root or default_stubs_root())
    stubs = {port: StubIndex(stubs_root / port) for port in PORTS}
    problems = []
    for f in files:
        problems += check_file(f, stubs, [Path(r) for r in local_roots])
    return problems


def main(argv=None):
    root = Path(__file__).resolve().parents[2]
    args = argv if argv is not None else sys.argv[1:]
    files = [Path(a) for a in args] or sorted(
        list((root / "firmware").rglob("*.py")) + list((root / "boards").rglob("*.py")))
    problems = check_tree(files, local_roots=[root / "firmware"])
    for p in problems:
        print(p)
    print("%d files checked, %d problems" % (len(files), len(problems)))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
