"""The live meter display shared by `make sim` / `meterctl sim`, `meterctl status` and `meterctl watch`:
the first line under the header says the meter's mode (development: REPL open; production)."""
import sys

OBIS_ROWS = (
    ("Voltage", "32.7.0", "V", "%.2f"),
    ("Current", "31.7.0", "A", "%.3f"),
    ("Active power +P", "1.7.0", "W", "%.1f"),
    ("Active power -P", "2.7.0", "W", "%.1f"),
    ("Reactive power +Q", "3.7.0", "var", "%.1f"),
    ("Apparent power", "9.7.0", "VA", "%.1f"),
    ("Power factor", "13.7.0", "", "%.3f"),
    ("Frequency", "14.7.0", "Hz", "%.3f"),
)
REGISTER_ROWS = (
    ("Import active energy", "1.8.0", "Wh"),
    ("Export active energy", "2.8.0", "Wh"),
    ("Import reactive energy", "3.8.0", "varh"),
    ("Export reactive energy", "4.8.0", "varh"),
)


def render(status, header=""):
    """Lines for one frame of the display from a firmware status dict."""
    lines = [header] if header else []
    win = status.get("window") or {}
    lines.append("%s on board %s   t=%ss   windows=%s" % (status.get("software"), status.get("board"),
                                                          status.get("t_s"), status.get("windows")))
    lines.append("  Mode %s" % mode_text(status))
    for label, code, unit, fmt in OBIS_ROWS:
        value = win.get(code)
        lines.append("  %-24s %-7s %12s %s" % (label, code, fmt % value if value is not None else "-", unit))
    regs = status.get("registers_wh") or {}
    for label, code, unit in REGISTER_ROWS:
        lines.append("  %-24s %-7s %12.3f %s" % (label, code, regs.get(code, 0.0), unit))
    j = status.get("journal") or {}
    lines.append("  Records stored %s (journal %s records, last seq %s, %s corrupt skipped, %s retired)"
                 % (status.get("records_stored"), j.get("records", "-"), j.get("last_seq", "-"),
                    j.get("corrupt_skipped", "-"), j.get("retired_sectors", "-")))
    health = "ok"
    if status.get("store_error"):
        health = "STORE ERROR: %s" % status["store_error"]
    elif status.get("refusal"):
        health = "NOT STORING: %s" % status["refusal"]
    lines.append("  Store health %s" % health)
    key = status.get("key") or {}
    if key.get("provisioned"):
        lines.append("  Key epoch %s id %s%s" % (key.get("epoch"), key.get("key_id"),
                                               " (DEVELOPMENT KEY)" if key.get("development") else ""))
    tamper = status.get("tamper")
    lines.append("  Tamper %s" % ("TAMPER: %s" % tamper.get("reason") if tamper else "none"))
    last = " (last: %s)" % status["last_fault"] if status.get("last_fault") else ""
    lines.append("  Faults %s%s   heap free %s" % (status.get("faults"), last, status.get("mem_free")))
    return lines


MODE_NOTES = {"development": "REPL open", "production": "REPL closed, console protocol only"}


def mode_text(status):
    """The meter's mode as the display shows it: "development (REPL open)", "production (...)"."""
    mode = status.get("mode") or "unknown"
    note = MODE_NOTES.get(mode)
    text = "%s (%s)" % (mode, note) if note else mode
    if (status.get("key") or {}).get("production_note"):
        text += "; key storage not MCU-internal (accepted at provisioning)"
    return text


def show(lines, out=None, redraw=None):
    """Print a frame: redraw in place on a terminal, plain lines otherwise."""
    out = out or sys.stdout
    if redraw is None:
        redraw = out.isatty()
    if redraw:
        out.write("\x1b[H\x1b[2J" + "\n".join(lines) + "\n")
    else:
        out.write(" | ".join(s.strip() for s in lines) + "\n")
    out.flush()
