"""Regions (partition views satisfying DESIGN.md 3.1) and partition tables."""
import journal_cases as c


def test_region_view():
    c.check_region_view()


def test_partitions():
    c.check_partitions()
