"""Deploy and boot: `meterctl deploy` installs the firmware verified by hash, the board boots it, meters,
and its readings match what the grid source applies; the board runs in development mode."""
import pytest
import rig as hil


def test_deploy_verifies_every_file_and_the_meter_boots(rig, deployed):
    out = deployed["deploy"]
    assert "deployed board %s" % rig.board in out and "verified by SHA-256 on the device" in out, out
    status = deployed["status"]
    assert status["board"] == rig.board, status
    assert status["software"].startswith("umeter "), status
    assert status["windows"] >= 2 and status["store_error"] is None and status["tamper"] is None, status
    assert status["faults"] == 0, status.get("last_fault")
    ident = deployed["identity"]
    if rig.virtual or ident["mode"] == "development":
        assert ident["mode"] == "development" and ident["note"] == "unverified development deploy", ident
    else:  # a real board an earlier run left on a verified app slot: the boot stage must keep booting it
        assert ident["mode"] == "slot" and not ident["trial"] and ident["software_id"], ident
        print("the board boots its verified slot %s (app %s), not the development deploy"
              % (ident["slot"], ident["version"]))
    again = rig.wait_windows(more=1)  # it goes on metering (a window is 1/20 s here: wait for one)
    assert again["t_s"] > status["t_s"] and again["windows"] > status["windows"], (status, again)


@pytest.mark.hil_needs("grid")
def test_readings_match_the_grid_scenario(rig, deployed):
    truth = hil.truth(rig.scenario)
    tol = hil.tolerances(rig.scenario)
    seen = []
    for _ in range(3):  # three windows, each on its own
        win = rig.wait_windows(more=1)["window"]
        got = {"vrms": win["32.7.0"], "irms": win["31.7.0"], "p": win["p"], "freq": win["14.7.0"]}
        seen.append(got)
        bad = {k: (got[k], truth[k], tol[k]) for k in got if not hil.close_enough(got[k], truth[k], tol[k])}
        assert not bad, "reading, truth, tolerance: %s (scenario %s)" % (bad, rig.scenario)
    for name, row in [("truth  ", truth)] + [("reading", got) for got in seen]:
        print("%s V %.2f  I %.3f  P %.1f  f %.3f" % (name, row["vrms"], row["irms"], row["p"], row["freq"]))


def test_board_runs_in_development_mode(rig, deployed):
    """Development mode (issue 12, item 7): the REPL is open for mpremote and meterctl, and the status says
    development. Production mode (REPL closed, console protocol, roles) is test_hil_production.py's."""
    assert rig.exec("print(6 * 7)").strip() == "42"   # the raw REPL reaches Python
    rc, out = hil.mpremote_exec(rig.port, "print(6 * 7007)")
    assert rc == 0 and "42042" in out, (rc, out)
    assert rig.status()["mode"] == "development"
