"""The HIL suite's options and its board.

    pytest tests/hil --port /dev/ttyUSB0 --board esp32_devkitc [--power-cycle CMD] [--grid FILE]
                     [--master-key FILE] [--ota-key FILE]
    pytest tests/hil --port /dev/ttyUSB0 --board esp32_devkitc --production DIR [--power-cycle CMD]
    pytest tests/hil                       # virtual boards the suite starts itself (what make test runs):
                                           # a development one, and a production one it provisions

Each test names what it needs with @pytest.mark.hil_needs(...); on a real rig that lacks it the test is
skipped with the reason, on the virtual board nothing is ever missing (checked here, and a test that
would skip there fails instead). See README.md next to this file.
"""
import json
import time
from pathlib import Path

import pytest
import rig as hil
from meterctl.cli import CliError

NEEDS = ("power_cycle", "grid", "export_key", "ota_key", "development", "production")
ROLE_FILES = ("master.key", "reader.key", "operator.key", "admin.key")


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
    g.addoption("--production", metavar="DIR",
                help="the board on --port is a production meter (REPL closed); DIR is its host key "
                     "directory (KEYFILES.md: master.key, reader.key, operator.key, admin.key). Virtual: "
                     "refused, the suite provisions its own production board")


def _opt(config, name):
    return config.getoption(name, None)  # None also when this conftest was not loaded at start-up


def pytest_configure(config):
    config.addinivalue_line("markers", "hil_needs(*capabilities): what the rig must have (%s)"
                            % ", ".join(NEEDS))
    if _opt(config, "--port") and not _opt(config, "--board"):
        raise pytest.UsageError("--port needs --board NAME (a directory under boards/)")
    if not _opt(config, "--port"):
        if _opt(config, "--board") not in (None, "sim"):
            raise pytest.UsageError("without --port the suite runs the virtual board: --board sim or none")
        real_only = [o for o in ("--power-cycle", "--power-fail-warning", "--master-key", "--ota-key",
                                 "--production") if _opt(config, o)]
        if real_only:
            raise pytest.UsageError("%s: for a real board (--port); the virtual board cuts its own power and "
                                    "makes its own keys" % ", ".join(real_only))
    elif _opt(config, "--micropython"):
        raise pytest.UsageError("--micropython: for the virtual board (no --port)")
    elif _opt(config, "--production"):
        _check_key_dir(Path(_opt(config, "--production")))


def _check_key_dir(path):
    missing = [name for name in ROLE_FILES if not (path / name).is_file()]
    if missing:
        raise pytest.UsageError("--production %s: no %s there; give the key directory the board was "
                                "provisioned with (meterctl provision --port P --key-dir DIR --production)"
                                % (path, ", ".join(missing)))


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
        key_dir = _opt(config, "--production")
        key = _opt(config, "--master-key")
        # export: a production meter over its console with DIR's reader and master keys
        key_args = ["--key-dir", key_dir] if key_dir else ["--key", key] if key else []
        board = hil.Rig(_opt(config, "--port"), _opt(config, "--board"), virtual=False,
                        scenario=_scenario(config), power_cycle_cmd=_opt(config, "--power-cycle"),
                        key_args=key_args, ota_key=_opt(config, "--ota-key"),
                        work_dir=work, cut_warns=_opt(config, "--power-fail-warning"), key_dir=key_dir)
        board.wait_answering(30)
        yield board
        return
    yield from _virtual_rig(config, work)


def _start_virtual_board(config, board_dir, scenario):
    from meterctl.vboard import VirtualBoard

    env = {"UMETER_SIM_SPEED": hil.SIM_SPEED, "UMETER_CHECKPOINT_S": hil.SIM_CHECKPOINT_S,
           "UMETER_SIM_SCENARIO_JSON": json.dumps(scenario)}
    log = []
    vb = VirtualBoard(board_dir, heapsize=hil.SIM_HEAP, env=env, log=log.append,
                      micropython=_opt(config, "--micropython"))
    vb.start()
    return vb


def _virtual_rig(config, work):
    scenario = _scenario(config) or dict(hil.DEFAULT_SCENARIO)
    board_dir = work / "board"
    board_dir.mkdir()
    (board_dir / "main.py").write_text("print('bare board: MicroPython, no firmware yet')\n")
    vb = _start_virtual_board(config, board_dir, scenario)
    try:
        if not vb.wait_ready(30):
            raise hil.RigError("the virtual board did not boot: %s" % vb.error)
        signer = hil.Signer.throwaway(work)
        board = hil.Rig(vb.pty_path, "sim", virtual=True, scenario=scenario, key_args=["--key-dir",
                        board_dir / "keys"], vboard=vb, ota_key=signer.key, work_dir=work)
        # every capability but production: the production board is prod_rig's, one per module
        missing = [(need, board.lacks(need)) for need in NEEDS if need != "production" and board.lacks(need)]
        assert not missing, "the virtual board must have every capability: %s" % missing
        yield board
    finally:
        vb.stop()


@pytest.fixture(scope="module")
def prod_rig(request, tmp_path_factory):
    """A production meter (REPL closed, console protocol, role keys in rig.key_dir). A real rig: the
    board itself, with --production DIR (skipped without). Virtual: a production sim board the suite
    provisions for the module (`meterctl provision --key-dir DIR --production`), its firmware the
    repository's (as `meterctl sim`); its key storage is host files, so --accept-unprotected-keys."""
    config = request.config
    if _opt(config, "--port"):
        board = request.getfixturevalue("rig")
        if board.lacks("production"):
            pytest.skip(board.lacks("production"))
        yield board
        return
    from test_provision import PRODUCTION_BOARD

    work = tmp_path_factory.mktemp("hil-production")
    scenario = _scenario(config) or dict(hil.DEFAULT_SCENARIO)
    board_dir = work / "board"
    board_dir.mkdir()
    (board_dir / "board.py").write_text(PRODUCTION_BOARD)  # the sim board without a development key
    key_dir = work / "keys"
    vb = _start_virtual_board(config, board_dir, scenario)
    try:
        if not vb.wait_ready(30):
            raise hil.RigError("the virtual board did not boot: %s" % vb.error)
        # A production meter runs a verified app, as in the field: installed first (development mode, on
        # its trial boot it has no key yet, so it cannot seal and confirm), then provisioned; its next
        # (trial) boot meters with the key and confirms.
        sid = _install_signed_app(vb, work, PRODUCTION_BOARD)
        hil.meterctl_ok("provision", "--port", vb.pty_path, "--key-dir", key_dir, "--production",
                        "--accept-unprotected-keys")
        board = hil.Rig(vb.pty_path, "sim", virtual=True, scenario=scenario, vboard=vb, work_dir=work,
                        key_dir=key_dir, key_args=["--key-dir", key_dir], software_id=sid)
        board.wait_answering(30)
        board.wait_status(lambda s: s["software_id"].get("software_id") == sid
                          and not s["software_id"]["trial"],
                          "the signed app confirmed on its slot", timeout=60)
        assert vb.production, "the provisioned virtual board did not close its REPL"
        missing = [(need, board.lacks(need)) for need in NEEDS if need not in ("development", "ota_key")
                   and board.lacks(need)]
        assert not missing, "the production virtual board must have every capability: %s" % missing
        yield board
    finally:
        vb.stop()


def _install_signed_app(vb, work, board_py):
    """The firmware with board_py as its board file, as a signed bundle (throwaway key), trusted, pushed and
    booted from its slot on trial: its software id."""
    from meterctl import boards
    from meterctl import bundle as host_bundle

    signer = hil.Signer.throwaway(work)
    hil.meterctl_ok("ota", "trust", "--port", vb.pty_path, "--board", "sim", "--arch", "py",
                    "--pubkey", signer.pub, "--policy", "ed25519")
    (work / "boards" / "sim").mkdir(parents=True)
    (work / "boards" / "sim" / "board.py").write_text(board_py)  # a slot carries its own board.py
    now = int(time.time())
    raw = work / "production.unsigned.bnd"
    raw.write_bytes(host_bundle.build(boards.get("sim", root=work / "boards"), "hil-production-1", 1,
                                      now - 60, now + 86400))
    bundle = work / "production.bnd"
    hil.meterctl_ok("bundle", "sign", "--key", signer.key, raw, "-o", bundle)
    sid = hil.software_id_of(bundle)
    hil.meterctl_ok("ota", "push", "--port", vb.pty_path, bundle)
    vb.restart()
    dev = hil.Rig(vb.pty_path, "sim", virtual=True, vboard=vb)
    dev.wait_answering(30)
    ident = dev.identity()
    assert ident["mode"] == "slot" and ident["software_id"] == sid and ident["trial"], ident
    return sid


@pytest.fixture(autouse=True)
def _needs(request):
    """Skip (real rig) or fail (virtual board) a test whose hil_needs the rig lacks (the production
    board for a test that uses prod_rig)."""
    marker = request.node.get_closest_marker("hil_needs")
    if marker is None:
        return
    board = request.getfixturevalue("prod_rig" if "prod_rig" in request.fixturenames else "rig")
    for need in marker.args:
        reason = board.lacks(need)
        if reason and board.virtual:
            pytest.fail("the virtual board lacks %s: %s" % (need, reason))
        if reason:
            pytest.skip(reason)


@pytest.fixture(scope="package")
def deployed(rig):
    """The firmware deployed with `meterctl deploy` and booted: the deploy's output, the first status
    after the boot and the identity then. Needs a development board (REPL open)."""
    if rig.lacks("development"):
        pytest.skip(rig.lacks("development"))  # only on a real rig given --production
    out = rig.deploy()
    status = rig.wait_windows(more=2)
    return {"deploy": out, "status": status, "identity": rig.identity()}
