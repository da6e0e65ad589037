"""Power cuts: the supply is cut and restored several times while the meter runs; after each boot every
energy register is at least what the meter showed just before the cut (the power-fail warning books the
open window and checkpoints within the hold-up time), no tamper is reported, and export still verifies."""
import pytest
import rig as hil

CUTS = 3


@pytest.mark.hil_needs("power_cycle")
def test_registers_never_go_backwards_across_power_cuts(rig, deployed, tmp_path):
    history = []
    for cut in range(CUTS):
        before = rig.wait_windows(more=3)
        if rig.virtual:  # the sim board's energy only grows while it meters: make sure it did
            assert before["registers_wh"]["1.8.0"] > 0, before["registers_wh"]
        rig.power_cycle()
        after = rig.wait_windows(more=1)
        regs0, regs1 = hil.registers(before), hil.registers(after)
        back = {code: (regs0[code], regs1.get(code)) for code in regs0
                if not regs1.get(code, -1) >= regs0[code]}
        assert not back, "cut %d: registers went backwards (before, after): %s" % (cut + 1, back)
        assert after["tamper"] is None and after["store_error"] is None, after
        assert after["restored_from_seq"] > 0, "the boot restored no checkpoint: %s" % after
        history.append((regs0["1.8.0"], regs1["1.8.0"]))
    print("1.8.0 before / after each cut (Wh): %s" % ", ".join("%.4f / %.4f" % h for h in history))
    if rig.lacks("export_key") is None:
        code, err = rig.export(tmp_path / "after-cuts.json")
        assert code == 0, err
        rows = hil.records_of(tmp_path / "after-cuts.json")
        boots = sum(1 for row in rows if row.get("event") == "boot")
        assert boots >= CUTS + 1, "%d boot events for %d cuts" % (boots, CUTS)
        if rig.virtual:  # the virtual board's cut always comes with the warning
            fails = sum(1 for row in rows if row.get("event") == "power_fail")
            assert fails >= CUTS, "%d power_fail events for %d cuts" % (fails, CUTS)
