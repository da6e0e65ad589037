"""`make bench-flash` runs end to end on the unix port (figures are printed, not asserted)."""
from meterctl import bench_flash


def test_bench_flash_runs(capfd):
    assert bench_flash.main(["--short"]) == 0
    out = capfd.readouterr().out
    for name in bench_flash.CHIPS:
        assert name in out
    assert "page program 256 B" in out and "sector erase 4 KB" in out and "Traceback" not in out


def test_short_form_measures_at_least_one_of_each_operation():
    assert bench_flash._amounts(1) == (bench_flash.ERASE_SECTORS, bench_flash.PROGRAM_PAGES,
                                       bench_flash.READ_BYTES)
    assert bench_flash._amounts(bench_flash.SHORT_DIVISOR) == (1, 16, 65536)
    assert bench_flash._amounts(10 ** 9) == (1, 1, 4096)
