# Headless virtual board (MicroPython unix port): run the real firmware for N simulated seconds as fast
# as the host allows, end with a checkpoint (the next run continues from it), print one JSON line.
#   micropython run_meter.py SECONDS      (board `sim` on the path; files per boards/sim/board.py)
import json
import sys
import time

import board
from umeter import app
from umeter.metering import obis


def main():
    seconds = float(sys.argv[1])
    meter = app.start(board, background=False)
    rate = meter.src.rate_hz
    total = int(seconds * rate)
    step = 60 * rate
    t0 = time.ticks_ms()
    done = 0
    while done < total:
        n = min(step, total - done)
        meter.run_samples(n)
        done += n
        if total > step:
            sys.stderr.write("sim: %d/%d s simulated\n" % (done // rate, total // rate))
    meter.checkpoint()
    host_s = time.ticks_diff(time.ticks_ms(), t0) / 1000.0
    st = meter.status()
    win = st["window"] or {}
    regs = st["registers_wh"]
    out = {
        "energy_import_wh": regs[obis.A_IMPORT], "energy_export_wh": regs[obis.A_EXPORT],
        "reactive_import_varh": regs[obis.R_IMPORT], "reactive_export_varh": regs[obis.R_EXPORT],
        "vrms": win.get(obis.VOLTAGE, 0.0), "irms": win.get(obis.CURRENT, 0.0), "p_w": win.get("p", 0.0),
        "q_var": win.get("q", 0.0), "pf": win.get(obis.POWER_FACTOR, 0.0),
        "freq_hz": win.get(obis.FREQUENCY, 0.0),
        "records": st["journal"]["records"] if st["journal"] else 0,
        "last_seq": st["journal"]["last_seq"] if st["journal"] else 0,
        "t_s": st["t_s"], "windows": st["windows"], "faults": st["faults"], "tamper": st["tamper"],
        "refusal": st["refusal"], "key_development": st["key"].get("development", False),
        "mem_free": st["mem_free"], "host_s": host_s,
        "sim_s_per_host_s": (done / rate) / host_s if host_s > 0 else 0.0,
    }
    print(json.dumps(out))


main()
