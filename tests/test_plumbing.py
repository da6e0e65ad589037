"""The MicroPython test plumbing must turn device-side failures into pytest failures."""
import pytest
from mpplugin import MicroPythonError, lane32_available, lanes, run_micropython


def test_snippet_output(micropython):
    assert micropython("print(6 * 7)").strip() == "42"


def test_traceback_is_a_failure():
    with pytest.raises(MicroPythonError, match="ZeroDivisionError"):
        run_micropython(["-c", "1/0"])


def test_failing_mp_module_is_reported(pytester_mp):
    result = pytester_mp
    assert result.ret != 0


@pytest.fixture
def pytester_mp(pytester):
    pytester.makefile(".py", mpt_bad="def test_bad():\n    assert 1 == 2, 'deliberate'\n")
    pytester.makeconftest("from mpplugin import pytest_collect_file, pytest_configure  # noqa: F401")
    result = pytester.runpytest("-p", "no:xdist", "-p", "no:cacheprovider")
    result.stdout.fnmatch_lines(["*deliberate*", "*%d failed*" % len(lanes())])
    return result


def test_every_mp_test_runs_on_each_lane(pytester):
    pytester.makefile(".py", mpt_probe_lanes="import sys\n\ndef test_maxsize():\n    print(sys.maxsize)\n")
    pytester.makeconftest("from mpplugin import pytest_collect_file, pytest_configure  # noqa: F401")
    result = pytester.runpytest("-p", "no:xdist", "-p", "no:cacheprovider", "-v")
    result.assert_outcomes(passed=len(lanes()))
    result.stdout.fnmatch_lines(["*test_maxsize?mp64? PASSED*"])
    if lane32_available():
        result.stdout.fnmatch_lines(["*test_maxsize?mp32? PASSED*"])
