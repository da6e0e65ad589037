"""Records flow into the journal while the meter runs, and `meterctl export` over the port verifies all
of them (exit 0)."""
import time

import pytest
import rig as hil


def test_records_flow_into_the_journal(rig, deployed):
    before = rig.status()
    assert before["refusal"] is None, "the board stores no records: %s (provision it: README.md)" \
        % before["refusal"]
    wait = rig.wall_s(2 * rig.checkpoint_s()) + 10  # a checkpoint is the record that surely comes
    after = rig.wait_status(lambda s: (s["journal"] or {}).get("last_seq", 0)
                            > (before["journal"] or {}).get("last_seq", 0) + 1,
                            "two more sealed records in the journal", timeout=wait)
    assert after["records_stored"] > before["records_stored"], (before, after)
    assert after["journal"]["records"] >= 2 and after["records_refused"] == before["records_refused"]


@pytest.mark.hil_needs("export_key")
def test_export_verifies_every_record(rig, deployed, tmp_path):
    rig.wait_status(lambda s: s["records_stored"] >= 2, "records stored", timeout=30)
    out = tmp_path / "records.json"
    t0 = time.monotonic()
    code, err = rig.export(out)
    assert code == 0, err
    rows = hil.records_of(out)
    kinds = {row["type"] for row in rows}
    assert "event" in kinds and "checkpoint" in kinds, kinds
    assert any(row.get("event") == "boot" for row in rows), rows[:5]
    seqs = [row["seq"] for row in rows]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    took = time.monotonic() - t0
    print("exported %d records (seq %d..%d) in %.1f s" % (len(rows), seqs[0], seqs[-1], took))
