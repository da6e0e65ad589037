# umeter.hal.mcu (shared by the ESP32/RP2040 boards) against a fake `machine` on the unix port.
import sys

import micropython


class _FakePin:
    IN = 0
    PULL_UP = 1
    IRQ_FALLING = 2
    made = []

    def __init__(self, no, mode, pull):
        self.no = no
        self.handler = None
        _FakePin.made.append(self)

    def irq(self, handler, trigger):
        assert trigger == _FakePin.IRQ_FALLING
        self.handler = handler


class _FakeTimer:
    PERIODIC = 1
    made = []

    def __init__(self, timer_id):
        self.timer_id = timer_id
        _FakeTimer.made.append(self)

    def init(self, period, mode, callback):
        self.period = period
        self.callback = callback


class _FakeMachine:
    Pin = _FakePin
    Timer = _FakeTimer


def _mcu():
    sys.modules["machine"] = _FakeMachine
    sys.modules.pop("umeter.hal.mcu", None)
    from umeter.hal import mcu

    return mcu


def test_power_fail_input_wires_the_falling_edge():
    mcu = _mcu()
    assert mcu.power_fail_input(None, print) is False
    seen = []
    assert mcu.power_fail_input(22, seen.append) is True
    pin = _FakePin.made[-1]
    assert pin.no == 22
    pin.handler(pin)
    assert seen == [pin]


def test_background_steps_in_bursts_until_no_block():
    mcu = _mcu()
    ready = [20]
    calls = [0]

    def step():
        calls[0] += 1
        if ready[0] == 0:
            return False
        ready[0] -= 1
        return True

    t = mcu.step_in_background(step, timer_id=-1, period_ms=20, burst=8)
    assert t.timer_id == -1 and t.period == 20
    t.callback(t)                      # a tick schedules one burst
    for _ in range(3):
        micropython.schedule(lambda _: None, 0)  # a bytecode boundary runs the scheduled burst
    assert calls[0] == 8 and ready[0] == 12
    ready[0] = 2
    t.callback(t)
    for _ in range(3):
        micropython.schedule(lambda _: None, 0)
    assert calls[0] == 8 + 3           # two blocks, then step() reported none ready
