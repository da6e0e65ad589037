"""The production-mode serial loop (umeter.console.serve) on the unix port, both lanes, driven through
real stdin/stdout pipes by meterctl's ConsoleClient: REPL control bytes on the line reach no Python
prompt, and the meter's step() keeps running while the line is busy."""
import os
import select
import subprocess
import time

import pytest

from meterctl.console_client import ConsoleClient, ConsoleError
from mpplugin import lanes, lane_binary, micropython_path
from mpt_console_kit import PUBLIC_LINE, ROLE_KEYS
from umeter.console import framing, roles

DEVICE = """
import sys, time
import mpt_console_kit as kit
from umeter.console import serve
steps = [0]
def step():
    steps[0] += 1
    time.sleep_ms(1)
c = kit.make_console(clock=time.ticks_ms, handlers={'status': lambda p: b'steps=%d' % steps[0]})
serve.lock_repl()
faults = serve.serve(c, step)
sys.stderr.write('served: steps %d faults %d\\n' % (steps[0], faults))
"""


@pytest.mark.parametrize("lane", lanes())
def test_serve_over_stdio(lane, tmp_path):
    env = dict(os.environ, MICROPYPATH=micropython_path())
    proc = subprocess.Popen([lane_binary(lane), "-X", "heapsize=2M", "-c", DEVICE], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=str(tmp_path))
    fd = proc.stdout.fileno()
    seen = bytearray()

    def read(n):
        ready, _, _ = select.select([fd], [], [], 0.05)
        data = os.read(fd, n) if ready else b""
        seen.extend(data)
        return data

    def write(data):
        proc.stdin.write(data)
        proc.stdin.flush()

    try:
        client = ConsoleClient(read, write, timeout=10)
        assert client.hello() == PUBLIC_LINE.decode()
        # what a REPL would react to: Ctrl-C, Ctrl-A (raw REPL), Ctrl-D, Ctrl-E (paste), a statement
        write(b"\x03\x03\x01\x04\x05\r\nimport os\r\nprint('hi')\r\n\x04\x02")
        time.sleep(0.3)
        while read(4096):
            pass
        assert client.hello() == PUBLIC_LINE.decode()
        with pytest.raises(ConsoleError, match="not_authenticated"):
            client._exchange(0x10, b"")  # before login, even a well-formed status request is refused
        client.login("reader", ROLE_KEYS[roles.READER])
        first = int(client.call("status").split(b"=")[1])
        write(b"\xa5" * 3000)  # a busy line
        time.sleep(0.3)
        second = int(client.call("status").split(b"=")[1])
        assert second > first, "the meter's step did not run while the line was busy"
        # everything the device ever wrote is frames: no prompt, no banner, no traceback
        d = framing.Decoder()
        out = d.feed(bytes(seen), 0)
        assert d.pending == 0 and all(not isinstance(r, int) for r in out)
        assert b">>>" not in seen and b"raw REPL" not in seen and b"Traceback" not in seen
    finally:
        proc.stdin.close()
        rc = proc.wait(timeout=30)
        err = proc.stderr.read().decode()
    print(lane, err.strip())
    assert rc == 0 and "served: steps" in err and "faults 0" in err, err
