"""The HIL suite's options and its board.

    pytest tests/hil --port /dev/ttyUSB0 --board esp32_devkitc [--power-cycle CMD] [--grid FILE]
                     [--master-key FILE] [--ota-key FILE]
    pytest tests/hil                       # a virtual board the suite starts itself (what make test runs)

Each test names what it needs with @pytest.mark.hil_needs(...); on a real rig that lacks it the test is
skipped with the reason, on the virtual board nothing is ever missing (checked here, and a test that
would skip there fails instead). See README.md next to this file.
"""
import json

import pytest
import rig as hil
from meterctl.cli import CliError

NEEDS = ("power_cycle", "grid", "export_key", "ota_key")
PRODUCTION_LATER = ("--production: production mode (issue 12: closed REPL, framed protocol, roles) is not "
                    "implemented in this firmware yet; the HIL lock-down and role tests come with it. "
                    "Run without --production (the board is tested in development mode).")


def pytest_addoption(parser):
    g = parser.getgroup("hil", "hardware-in-the-loop suite (tests/hil)")
    g.addoption("--port", help="the board's serial port; without it the suite starts a virtual board")
    g.addoption("--board", help="board name under boards/ (required with --port; virtual: sim)")
    g.addoption("--power-cycle", metavar="CMD",
                help="shell command that cuts the board's supply and restores it (virtual: a kill after "
                     "the power-fail warning)")
    g.addoption("--power-fail-warning", action="store_true",
                help="the --power-cycle cut raises the board's power-fail input before the supply goes "
                     "(supervisor wired): then no metered energy may be lost at all")
    g.addoption("--grid", metavar="FILE",
                help="grid scenario JSON the rig's source applies (keys of host_tools/sim/grid.py); "
                     "virtual: the sim board's scenario")
    g.addoption("--master-key", metavar="FILE", help="device master key file (from meterctl provision), "
                                                     "for meterctl export")
    g.addoption("--ota-key", metavar="FILE",
                help="the rig's Ed25519 signing key file (meterctl keys new --alg ed25519); the device's "
                     "update trust store is provisioned with it if it is not yet")
    g.addoption("--micropython", metavar="PATH",
                help="virtual board only: the unix port to run it on (default: the venv's; e.g. the "
                     "32-bit build /work/shared/micropython32/micropython)")
    g.addoption("--production", metavar="DIR", help="role key files of a production-mode board (not "
                                                    "available yet: see README.md)")


def _opt(config, name):
    return config.getoption(name, None)  # None also when this conftest was not loaded at start-up


def pytest_configure(config):
    config.addinivalue_line("markers", "hil_needs(*capabilities): what the rig must have (%s)"
                            % ", ".join(NEEDS))
    if _opt(config, "--production"):
        raise pytest.UsageError(PRODUCTION_LATER)
    if _opt(config, "--port") and not _opt(config, "--board"):
        raise pytest.UsageError("--port needs --board NAME (a directory under boards/)")
    if not _opt(config, "--port"):
        if _opt(config, "--board") not in (None, "sim"):
            raise pytest.UsageError("without --port the suite runs the virtual board: --board sim or none")
        real_only = [o for o in ("--power-cycle", "--power-fail-warning", "--master-key", "--ota-key")
                     if _opt(config, o)]
        if real_only:
            raise pytest.UsageError("%s: for a real board (--port); the virtual board cuts its own power and "
                                    "makes its own keys" % ", ".join(real_only))
    elif _opt(config, "--micropython"):
        raise pytest.UsageError("--micropython: for the virtual board (no --port)")


def _scenario(config):
    path = _opt(config, "--grid")
    if path is None:
        return None
    try:
        return hil.load_grid(path)
    except CliError as e:
        raise pytest.UsageError("--grid: %s" % e) from None


@pytest.fixture(scope="package")
def rig(request, tmp_path_factory):
    config = request.config
    work = tmp_path_factory.mktemp("hil")
    if _opt(config, "--port"):
        key = _opt(config, "--master-key")
        board = hil.Rig(_opt(config, "--port"), _opt(config, "--board"), virtual=False,
                        scenario=_scenario(config), power_cycle_cmd=_opt(config, "--power-cycle"),
                        key_args=["--key", key] if key else [], ota_key=_opt(config, "--ota-key"),
                        work_dir=work, cut_warns=_opt(config, "--power-fail-warning"))
        board.wait_answering(30)
        yield board
        return
    yield from _virtual_rig(config, work)


def _virtual_rig(config, work):
    from meterctl.vboard import VirtualBoard

    scenario = _scenario(config) or dict(hil.DEFAULT_SCENARIO)
    board_dir = work / "board"
    board_dir.mkdir()
    (board_dir / "main.py").write_text("print('bare board: MicroPython, no firmware yet')\n")
    env = {"UMETER_SIM_SPEED": hil.SIM_SPEED, "UMETER_CHECKPOINT_S": hil.SIM_CHECKPOINT_S,
           "UMETER_SIM_SCENARIO_JSON": json.dumps(scenario)}
    log = []
    vb = VirtualBoard(board_dir, heapsize=hil.SIM_HEAP, env=env, log=log.append,
                      micropython=_opt(config, "--micropython"))
    vb.start()
    try:
        if not vb.wait_ready(30):
            raise hil.RigError("the virtual board did not boot: %s" % vb.error)
        signer = hil.Signer.throwaway(work)
        board = hil.Rig(vb.pty_path, "sim", virtual=True, scenario=scenario, key_args=["--key-dir",
                        board_dir / "keys"], vboard=vb, ota_key=signer.key, work_dir=work)
        missing = [(need, board.lacks(need)) for need in NEEDS if board.lacks(need)]
        assert not missing, "the virtual board must have every capability: %s" % missing
        yield board
    finally:
        vb.stop()


@pytest.fixture(autouse=True)
def _needs(request):
    """Skip (real rig) or fail (virtual board) a test whose hil_needs the rig lacks."""
    marker = request.node.get_closest_marker("hil_needs")
    if marker is None:
        return
    board = request.getfixturevalue("rig")
    for need in marker.args:
        reason = board.lacks(need)
        if reason and board.virtual:
            pytest.fail("the virtual board lacks %s: %s" % (need, reason))
        if reason:
            pytest.skip(reason)


@pytest.fixture(scope="package")
def deployed(rig):
    """The firmware deployed with `meterctl deploy` and booted: the deploy's output, the first status
    after the boot and the identity then."""
    out = rig.deploy()
    status = rig.wait_windows(more=2)
    return {"deploy": out, "status": status, "identity": rig.identity()}
