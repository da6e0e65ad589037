# Retention record (RECORDS.md section 5): round trip with 48-bit seqs, refusals, on both lanes.
from umeter import records as r


def test_retention_record_round_trip_and_refusals():
    p = r.retention(1, 40, 41, b"\x01" * 16)
    t, f = r.decode(p)
    assert t == r.REC_RETENTION and f["first_dropped"] == 1 and f["last_dropped"] == 40
    assert f["oldest_kept"] == 41 and f["oldest_kept_tag"] == b"\x01" * 16
    big = (1 << 47) + 3
    t, f = r.decode(r.retention(big, big + 100, big + 101, b""))
    assert f["last_dropped"] == big + 100
    for bad in ((0, 1, 2, b""), (5, 4, 6, b""), (1, 4, 3, b""), (1, 2, 3, b"x" * 65)):
        try:
            r.retention(*bad)
            raise AssertionError(bad)
        except ValueError:
            pass
    for bad in (p[:-1], p + b"x", bytes((4, 2)) + p[2:]):
        try:
            r.decode(bad)
            raise AssertionError(bad)
        except ValueError:
            pass
