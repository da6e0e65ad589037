"""`make bench-flash` runs end to end on the unix port (figures are printed, not asserted)."""
from meterctl import bench_flash


def test_bench_flash_runs(capfd):
    assert bench_flash.main([]) == 0
    out = capfd.readouterr().out
    for name in bench_flash.CHIPS:
        assert name in out
    assert "page program 256 B" in out and "sector erase 4 KB" in out and "Traceback" not in out
