"""Grid scenario files for the virtual board: read, parse and validate before anything is written, so
the user sees the real reason for a refusal (not a firmware that stops without output)."""
import json
from pathlib import Path

from meterctl.cli import CliError
from sim import grid


def _refuse_constant(name):
    # JSON has no NaN / Infinity; Python's parser would take them
    raise ValueError("%s is not a number" % name)


def parse(text, where="scenario"):
    """The scenario dict from JSON text, validated against sim.grid (CliError with the reason)."""
    try:
        value = json.loads(text, parse_constant=_refuse_constant)
    except ValueError as e:
        raise CliError("%s is not valid JSON: %s" % (where, e)) from None
    if not isinstance(value, dict):
        raise CliError("%s must be a JSON object (keys as in host_tools/sim/grid.py)" % where)
    merged = dict(grid.DEFAULTS)
    merged.update(value)
    try:
        grid.validate(merged)
    except ValueError as e:
        raise CliError("%s: %s" % (where, e)) from None
    return value


def load(path):
    """(absolute path, text) of a valid scenario file; CliError naming the file and the reason."""
    path = Path(path).resolve()
    try:
        text = path.read_text()
    except OSError as e:
        raise CliError("cannot read scenario %s: %s" % (path, e.strerror or e)) from None
    except UnicodeDecodeError:
        raise CliError("scenario %s is not a text file" % path) from None
    parse(text, "scenario %s" % path)
    return path, text
