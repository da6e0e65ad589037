"""Board discovery: every ``boards/<dir>/board.py`` is a board. Its NAME, ARCH (mpy-cross -march, None for
the unix port) and optional CHIP are read with ``ast`` from literal assignments: board files import
``machine`` and friends, so they are never imported on the host."""
import ast
from pathlib import Path

from meterctl.cli import CliError

BOARDS_DIR = Path(__file__).resolve().parents[2] / "boards"
# The MCU family behind an mpy-cross architecture, when the board does not name its CHIP.
CHIP_FOR_ARCH = {"xtensawin": "esp32", "armv6m": "rp2040"}


class Board:
    def __init__(self, name, arch, chip, path):
        self.name = name
        self.arch = arch      # mpy-cross -march value, or None: runs on the unix port (no compile)
        self.chip = chip      # "esp32", "rp2040", ... or None (virtual board)
        self.path = path      # the board.py file

    def __repr__(self):
        return "Board(%r, arch=%r, chip=%r)" % (self.name, self.arch, self.chip)


def _literals(path):
    """Top-level NAME = <literal> assignments of a board file."""
    tree = ast.parse(Path(path).read_text(), str(path))
    found = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                found[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                pass
    return found


def discover(root=None):
    """{name: Board} for every board file under root (default: the repository's boards/)."""
    root = Path(root) if root is not None else BOARDS_DIR
    boards = {}
    for path in sorted(root.glob("*/board.py")):
        try:
            values = _literals(path)
        except (OSError, SyntaxError, UnicodeDecodeError):
            continue  # a broken board file is not a board; deploy would fail on it anyway
        name = values.get("NAME") or path.parent.name
        arch = values.get("ARCH")
        chip = values.get("CHIP") or CHIP_FOR_ARCH.get(arch)
        boards[name] = Board(name, arch, chip, path)
    return boards


def get(name, root=None):
    """The board called name, or a CliError that lists the valid names."""
    boards = discover(root)
    valid = ", ".join(sorted(boards)) or "none found in %s" % (root or BOARDS_DIR)
    if not name:
        raise CliError("no board given: use --board NAME (one of: %s)" % valid)
    if name not in boards:
        raise CliError("unknown board %r (valid boards: %s)" % (name, valid))
    return boards[name]
