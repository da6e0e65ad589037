"""Power cuts: the supply is cut and restored several times while the meter runs; after each boot no
energy register is below what it was before the cut, no tamper is reported, and export still verifies.

Two guarantees, checked per cut (DESIGN.md section 4):
- always: a register value the meter showed at least one checkpoint interval before the cut is kept
  (the checkpoint taken since then holds it; the high-water mark only moves forward);
- with the power-fail warning (the virtual board always; a real rig with --power-fail-warning): nothing
  at all is lost, not even the window in progress (the warning books it and checkpoints within the
  hold-up time), so the registers after the boot are at least those read just before the cut."""
import pytest
import rig as hil

CUTS = 3


def _backwards(before, after):
    regs0, regs1 = hil.registers(before), hil.registers(after)
    return {code: (regs0[code], regs1.get(code)) for code in regs0 if not regs1.get(code, -1) >= regs0[code]}


@pytest.mark.hil_needs("power_cycle")
def test_registers_never_go_backwards_across_power_cuts(rig, deployed, tmp_path):
    interval = rig.checkpoint_s()
    history = []
    for cut in range(CUTS):
        settled = rig.wait_windows(more=1)
        last = rig.wait_status(lambda s: s["t_s"] > settled["t_s"] + interval + 1,
                               "a checkpoint interval metered", timeout=rig.wall_s(interval) + 60)
        assert last["registers_wh"]["1.8.0"] > settled["registers_wh"]["1.8.0"], "no energy metered"
        rig.power_cycle()
        after = rig.wait_windows(more=1)
        lost = _backwards(settled, after)
        assert not lost, "cut %d: a checkpointed register went back (before, after): %s" % (cut + 1, lost)
        lost = _backwards(last, after)
        assert not (rig.cut_warns and lost), "cut %d: energy lost despite the power-fail warning " \
                                             "(before, after): %s" % (cut + 1, lost)
        assert after["tamper"] is None and after["store_error"] is None, after
        assert after["restored_from_seq"] > 0, "the boot restored no checkpoint: %s" % after
        history.append((last["registers_wh"]["1.8.0"], after["registers_wh"]["1.8.0"]))
    print("1.8.0 just before / after each cut (Wh, warning %s): %s"
          % ("on" if rig.cut_warns else "off", ", ".join("%.4f / %.4f" % h for h in history)))
    if rig.lacks("export_key") is None:
        code, err = rig.export(tmp_path / "after-cuts.json")
        assert code == 0, err
        rows = hil.records_of(tmp_path / "after-cuts.json")
        boots = sum(1 for row in rows if row.get("event") == "boot")
        assert boots >= CUTS + 1, "%d boot events for %d cuts" % (boots, CUTS)
        if rig.cut_warns:
            fails = sum(1 for row in rows if row.get("event") == "power_fail")
            assert fails >= CUTS, "%d power_fail events for %d cuts" % (fails, CUTS)
