# Headless virtual board (MicroPython unix port): run the real firmware for N simulated seconds as fast
# as the host allows, end with a clean stop: the window in progress is booked and checkpointed, so N
# simulated seconds register N seconds of energy and the next run continues exactly from it.
#   micropython run_meter.py SECONDS [PROGRESS_S]    (board `sim` on the path; files per boards/sim/board.py)
# Prints JSON lines: {"event": "boot", ...} once started, {"event": "progress", ...} every PROGRESS_S
# simulated seconds (default 60), and the result object as the last line.
import gc
import json
import sys
import time

import board
from umeter import app
from umeter.metering import obis


def snapshot(meter, event):
    gc.collect()
    st = meter.status()
    j = st["journal"] or {}
    return {"event": event, "t_s": st["t_s"], "windows": st["windows"], "registers_wh": st["registers_wh"],
            "last_seq": j.get("last_seq", 0), "records": j.get("records", 0), "mem_free": gc.mem_free(),
            "tamper": st["tamper"], "restored_from_seq": st["restored_from_seq"], "faults": st["faults"]}


def emit(obj):
    print(json.dumps(obj))
    sys.stdout.flush()  # a killed run (power-cut test) must have shown everything it got to


def main():
    seconds = float(sys.argv[1])
    progress_s = int(sys.argv[2]) if len(sys.argv) > 2 else 60
    meter = app.start(board, background=False)
    emit(snapshot(meter, "boot"))
    rate = meter.src.rate_hz
    total = int(seconds * rate)
    chunk = progress_s * rate
    t0 = time.ticks_ms()
    done = 0
    while done < total:
        n = min(chunk, total - done)
        meter.run_samples(n)
        done += n
        if done < total:
            emit(snapshot(meter, "progress"))
    win = meter.status()["window"] or {}  # the readings of the last whole window, not of the stub
    meter.stop()                            # that the clean stop ends at the last sample
    host_s = time.ticks_diff(time.ticks_ms(), t0) / 1000.0
    st = meter.status()
    regs = st["registers_wh"]
    emit({
        "energy_import_wh": regs[obis.A_IMPORT], "energy_export_wh": regs[obis.A_EXPORT],
        "reactive_import_varh": regs[obis.R_IMPORT], "reactive_export_varh": regs[obis.R_EXPORT],
        "vrms": win.get(obis.VOLTAGE, 0.0), "irms": win.get(obis.CURRENT, 0.0), "p_w": win.get("p", 0.0),
        "q_var": win.get("q", 0.0), "pf": win.get(obis.POWER_FACTOR, 0.0),
        "freq_hz": win.get(obis.FREQUENCY, 0.0),
        "records": st["journal"]["records"] if st["journal"] else 0,
        "last_seq": st["journal"]["last_seq"] if st["journal"] else 0,
        "t_s": st["t_s"], "windows": st["windows"], "faults": st["faults"], "tamper": st["tamper"],
        "refusal": st["refusal"], "key_development": st["key"].get("development", False),
        "mem_free": gc.mem_free(), "host_s": host_s,
        "sim_s_per_host_s": (done / rate) / host_s if host_s > 0 else 0.0,
    })


main()
