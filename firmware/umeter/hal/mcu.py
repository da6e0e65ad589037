"""What the MCU boards (ESP32, RP2040) share: the power-fail input and the soft timer that steps the
meter in the background, so the REPL stays usable in development mode (scheduled callbacks run while
the REPL waits for input on these ports)."""
import micropython
from machine import Pin, Timer


def power_fail_input(pin_no, callback):
    """Call callback(pin) on the falling edge of a supervisor's power-fail output; False if not wired."""
    if pin_no is None:
        return False
    Pin(pin_no, Pin.IN, Pin.PULL_UP).irq(callback, Pin.IRQ_FALLING)
    return True


def step_in_background(step, timer_id, period_ms, burst):
    """Every period_ms, schedule up to `burst` calls of step() (until it reports no block ready)."""

    def drain(_arg):
        for _ in range(burst):
            if not step():
                break

    def tick(_timer):
        try:
            micropython.schedule(drain, None)
        except RuntimeError:
            pass  # schedule queue full: the next tick catches up

    timer = Timer(timer_id)
    timer.init(period=period_ms, mode=Timer.PERIODIC, callback=tick)
    return timer
