# The device side of OTA over the console (ota/CONSOLE_OTA.md) on the unix port, both lanes:
# tests/test_ota_console.py signs the bundles under CPython and writes them to OTA_CASES; the scenario_*
# functions here drive OtaCommands (console/handlers_ota.py) exactly as the console would, frame by frame,
# over a plain directory as the board's internal filesystem.
import gc
import json
import os
import struct
import time

from mptest import raises, tmpdir
from umeter.console.console import CommandError
from umeter.console.framing import ERR_BAD_PAYLOAD, MAX_PAYLOAD
from umeter.console.handlers_ota import OtaCommands, IDLE_MS, MAX_CHUNK, VERSION
from umeter.hal.keystore_file import FileBackend
from umeter.ota import bundle, slots, trust

HEAPSIZE = "8M"
CASES = os.getenv("OTA_CASES") or ""


def load(name):
    with open(CASES + "/" + name + ".bnd", "rb") as f:
        return f.read()


def provision(backend):
    with open(CASES + "/trust.json") as f:
        t = json.load(f)
    keys = [(alg, bytes.fromhex(pub)) for alg, pub in t["keys"]]
    trust.provision(backend, t["board"], t["arch"], keys, t["policy"], t["floor"])


class Clock:
    def __init__(self):
        self.t = 5000

    def __call__(self):
        return self.t


def head_len(data):
    m_len, s_len = bundle.parse_header(data[:bundle.HEADER_LEN])
    return bundle.HEADER_LEN + m_len + s_len


def now_us():
    return time.ticks_us()


class Figures:
    def __init__(self):
        self.data_us = 0      # longest ota_data call that only streams payload
        self.head_us = 0      # the call that completes the head (signature verification)
        self.finish_us = 0
        self.alloc = 0        # most heap one ota_data call allocated


def call(fn, payload, fig=None, what=None):
    gc.collect()
    a0 = gc.mem_alloc()
    t0 = now_us()
    out = fn(payload)
    us = time.ticks_diff(now_us(), t0)
    if fig is not None:
        if what == "data":
            fig.data_us = max(fig.data_us, us)
            fig.alloc = max(fig.alloc, gc.mem_alloc() - a0)
        elif what == "head":
            fig.head_us = max(fig.head_us, us)
        elif what == "finish":
            fig.finish_us = max(fig.finish_us, us)
    return out


def begin(ota, data, total=None):
    total = len(data) if total is None else total
    ans = ota.ota_begin(bytes((VERSION,)) + struct.pack(">I", total) + data[:bundle.HEADER_LEN])
    version, at, chunk = struct.unpack(">BIH", ans)
    assert (version, at, chunk) == (VERSION, bundle.HEADER_LEN, MAX_CHUNK), (version, at, chunk)
    return at


def send(ota, data, at, stop=None, fig=None, total=None):
    """Send bundle bytes from `at` as the host does: chunks of MAX_CHUNK, the head's last chunk ending
    at the head's end, seeking to the answered offset. Returns the device's next offset."""
    total = len(data) if total is None else total
    hl = head_len(data)
    while at < min(len(data), total) and (stop is None or at < stop):
        end = min(at + MAX_CHUNK, len(data))
        if at < hl:
            end = min(end, hl)
        what = "head" if end == hl else ("data" if at >= hl else None)
        ans = call(ota.ota_data, struct.pack(">I", at) + data[at:end], fig, what)
        nxt = struct.unpack(">I", ans)[0]
        assert nxt == end or end == hl, (at, end, nxt)
        at = nxt
    return at


def push(ota, data, fig=None):
    at = send(ota, data, begin(ota, data), fig=fig)
    assert at == len(data), (at, len(data))
    return json.loads(call(ota.ota_finish, b"", fig, "finish"))


def refused(fn, payload, match, arg=None):
    with raises(CommandError, match=match) as e:
        fn(payload)
    assert e.value.code == ERR_BAD_PAYLOAD, e.value.code
    if arg is not None:
        assert e.value.arg == arg, (e.value.arg, arg)
    return e.value


def push_refused(ota, data, match):
    at = begin(ota, data)
    with raises(CommandError, match=match) as e:
        send(ota, data, at)
        ota.ota_finish(b"")
    assert e.value.code == ERR_BAD_PAYLOAD and ota.state() == "idle", (e.value.code, ota.state())
    assert not ota.reboot_wanted()


def fresh():
    d = tmpdir() + "/dev%d" % time.ticks_us()
    os.mkdir(d)
    os.chdir(d)
    backend = FileBackend("ota")
    provision(backend)
    return backend


def counts(backend):
    return dict(zip(slots.COUNTERS, slots.load(backend).counts))


def slot_verifies(backend, index):
    st = slots.load(backend)
    m, _ = slots.check_slot("", index, trust.load(backend), st, bytearray(1024))
    return m.version


def exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False


def scenario_install_and_refusals():
    backend = fresh()
    clock = Clock()
    ota = OtaCommands(None, None, root="", backend=backend, ticks_ms=clock)
    fig = Figures()
    assert ota.state() == "idle" and not ota.reboot_wanted()
    refused(ota.ota_data, struct.pack(">I", 14) + b"x", "no update in progress")
    refused(ota.ota_finish, b"", "no update in progress")
    refused(ota.ota_begin, b"\x01\x00", "version 1 u8")
    refused(ota.ota_begin, b"\x02" + bytes(18), "version 1 u8")
    v1 = load("v1")
    refused(ota.ota_begin, b"\x01" + struct.pack(">I", len(v1)) + b"NOTABUNDLE" + v1[10:14], "header")
    refused(ota.ota_begin, b"\x01" + struct.pack(">I", head_len(v1) - 1) + v1[:14], "below its head")

    # A forged signature: refused at the frame that completes the head, before a payload byte is taken;
    # no slot directory was created and no install attempt counted (only the rejection).
    forged = load("forged")
    at = begin(ota, forged)
    with raises(CommandError, match="does not verify"):
        send(ota, forged, at)
    assert not exists("slot_a") and not exists("slot_b")
    c = counts(backend)
    assert c["attempts"] == 0 and c["rejected"] == 1, c
    refused(ota.ota_data, struct.pack(">I", head_len(forged)) + forged[head_len(forged):][:100],
            "no update in progress")

    # Expiry against the meter's clock (the operator's time base), when it has one.
    class Meter:
        def clock(self):
            return 1760000000 + 2000

    late = OtaCommands(Meter(), None, root="", backend=backend)
    push_refused(late, load("expires"), "bundle expired (expires 1760001000, device time 1760002000)")

    # The good bundle installs into the inactive slot (a), trial boot armed, reboot asked for once.
    answer = push(ota, v1, fig)
    manifest = v1[bundle.HEADER_LEN:bundle.HEADER_LEN + bundle.parse_header(v1[:14])[0]]
    assert answer == {"software_id": bundle.software_id(manifest), "slot": "a", "reboot": True,
                      "trial_boots": slots.DEFAULT_ATTEMPTS}, answer
    assert ota.reboot_wanted() and not ota.reboot_wanted() and ota.state() == "idle"
    st = slots.load(backend)
    assert st.active == 0 and st.trial and slot_verifies(backend, 0) == "1.0"
    assert slots.confirm("", backend)   # as the app does once healthy

    # Wrong offsets are refused with the expected one (the update goes on); a chunk may not run past
    # the head's end; an oversize chunk is refused.
    v2 = load("v2")
    hl = head_len(v2)
    at = begin(ota, v2)
    refused(ota.ota_data, struct.pack(">I", 15) + v2[15:100], "offset 15, expected 14", 14)
    refused(ota.ota_data, struct.pack(">I", 14) + bytes(MAX_CHUNK + 1), "1..%d bytes" % MAX_CHUNK)
    assert MAX_CHUNK + 4 == MAX_PAYLOAD
    assert ota.ota_data(struct.pack(">I", 14) + v2[14:hl - 10]) == struct.pack(">I", hl - 10)
    at = hl - 10
    refused(ota.ota_data, struct.pack(">I", at) + v2[at:hl + 5], "end at the head's end", hl)
    assert ota.state() == "head"
    at = send(ota, v2, at, stop=hl + 2 * MAX_CHUNK)
    assert ota.state() == "payload"
    refused(ota.ota_data, struct.pack(">I", at - 1) + v2[at - 1:at + 10], "expected %d" % at, at)
    refused(ota.ota_finish, b"", "bundle incomplete")     # finishing early ends the update
    assert ota.state() == "idle" and slots.load(backend).active == 0

    # Excess bytes and a file not in the manifest (it can only come as bytes past the last file): refused
    # by the installer; more bytes than ota_begin announced: refused here. The active slot is untouched.
    push_refused(ota, load("longer"), "bundle longer than its manifest says")
    push_refused(ota, load("extra_file"), "bundle longer than its manifest says")
    push_refused(ota, load("corrupt_file"), "SHA-256 does not match")
    push_refused(ota, load("replay_v0"), "below the installed 1")
    at = begin(ota, v2, total=len(v2) - 10)
    with raises(CommandError, match="more bytes than the bundle length"):
        send(ota, v2, at)
    st = slots.load(backend)
    assert st.active == 0 and not st.trial and slot_verifies(backend, 0) == "1.0"

    # An idle update times out.
    at = send(ota, v2, begin(ota, v2), stop=hl + MAX_CHUNK)
    clock.t += IDLE_MS + 1
    refused(ota.ota_data, struct.pack(">I", at) + v2[at:at + 10], "timed out")
    assert ota.state() == "idle"

    ev = [(name, text) for _, name, _, _, text in slots.pending_events(backend)]
    texts = [text for name, text in ev if name == "rejected"]
    for want in ("bundle longer than its manifest says (1 ", "bundle longer than its manifest says (10",
                 "file umeter/app.py: SHA-256 does not mat", "security counter 0 below the installed 1"):
        assert want in texts, (want, ev)
    c = counts(backend)
    assert c["rejected"] == 6 and c["installed"] == 1 and c["confirmed"] == 1, c
    print("console ota figures: longest payload frame %d us, head frame (verify) %d us, finish %d us, "
          "most heap per payload frame %d B" % (fig.data_us, fig.head_us, fig.finish_us, fig.alloc))


def scenario_abort_keeps_the_active_slot_then_resumes():
    backend = fresh()
    ota = OtaCommands(None, None, root="", backend=backend, ticks_ms=Clock())
    push(ota, load("v1"))
    assert ota.reboot_wanted() and slots.confirm("", backend)
    v2 = load("v2")
    hl = head_len(v2)
    stop = hl + (len(v2) - hl) * 2 // 3
    sent = send(ota, v2, begin(ota, v2), stop=stop)
    assert sent >= stop and ota.state() == "payload"
    # A new ota_begin drops the unfinished update: the active slot is the same, verified, not in trial;
    # the half-written one is not bootable.
    begin(ota, v2)
    st = slots.load(backend)
    assert st.active == 0 and not st.trial and st.digests[1] is None and slot_verifies(backend, 0) == "1.0"
    # The same bundle again resumes: the answer to the head's last frame skips what the slot holds.
    at = resumed = send(ota, v2, bundle.HEADER_LEN, stop=hl)
    assert hl < at <= sent, (hl, at, sent)
    at = send(ota, v2, at)
    answer = json.loads(ota.ota_finish(b""))
    assert answer["slot"] == "b" and ota.reboot_wanted()
    st = slots.load(backend)
    assert st.active == 1 and st.previous == 0 and st.trial and slot_verifies(backend, 1) == "2.0"
    # An abort() (what a session end may call) between frames: the installed slot b stays active.
    push_at = send(ota, load("v3"), begin(ota, load("v3")), stop=hl + MAX_CHUNK)
    assert push_at > hl
    ota.abort()
    assert ota.state() == "idle" and slots.load(backend).active == 1 and slot_verifies(backend, 1) == "2.0"
    print("console ota resume: at payload byte %d of %d" % (resumed - hl, len(v2) - hl))
