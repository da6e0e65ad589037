"""A machine.Pin look-alike output for the simulators: value([v]), __call__([v]), on()/off(),
high()/low(), init(); tells a listener about every change of level (e.g. chip select)."""


class PinSim:
    def __init__(self, value=1, listener=None):
        self._v = 1 if value else 0
        self._listener = listener

    def init(self, *args, **kwargs):
        pass

    def value(self, v=None):
        if v is None:
            return self._v
        v = 1 if v else 0
        if v != self._v:
            self._v = v
            if self._listener:
                self._listener(v)
        return None

    def __call__(self, v=None):
        return self.value(v)

    def on(self):
        self.value(1)

    def off(self):
        self.value(0)

    high = on
    low = off
