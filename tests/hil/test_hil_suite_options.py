"""The suite's own options, run as a user runs them (a second pytest): a production board on --port is
driven as a real rig would be (the production virtual board's pty standing in for a serial port), and
the option checks refuse what cannot work. Virtual board only: on a real rig these are skipped (they
test the suite, not the board)."""
import pytest
import rig as hil

HIL = hil.ROOT / "tests" / "hil"


@pytest.fixture
def suite(pytester, request):
    if request.config.getoption("--port", None):
        pytest.skip("tests the suite itself against a virtual board; nothing to do on a real rig")

    def run(*args, timeout=120):
        return pytester.runpytest_subprocess(str(HIL), "-p", "no:cacheprovider", "-p", "no:xdist", "-q",
                                             "-rs", *[str(a) for a in args], timeout=timeout)
    return run


def test_a_production_board_on_a_port_runs_like_a_real_rig(suite, prod_rig):
    """--port P --board sim --production DIR: the production tests run over the console with DIR's keys;
    the development tests skip, saying why (the REPL is closed)."""
    result = suite("--port", prod_rig.port, "--board", "sim", "--production", prod_rig.key_dir,
                   "-k", "hello_line or status_and_software_id or deploy_verifies or power_cuts_in_prod")
    out = result.stdout.str()
    result.assert_outcomes(passed=2, skipped=2)
    assert "needs a development-mode board (REPL open): this run is --production" in out, out
    assert "needs --power-cycle CMD" in out, out


def test_option_checks(suite, tmp_path):
    result = suite("--production", tmp_path)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "--production: for a real board (--port)" in result.stderr.str(), result.stderr.str()
    (tmp_path / "reader.key").write_bytes(bytes(32))
    result = suite("--port", "/dev/null", "--board", "sim", "--production", tmp_path)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    err = result.stderr.str()
    assert "no master.key, operator.key, admin.key there" in err and "--key-dir DIR --production" in err, err
