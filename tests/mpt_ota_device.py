# The device side of signed OTA on the MicroPython unix port. tests/test_ota_device.py signs the bundles
# with fresh keys under CPython (cryptography, pyhsslms), writes them to OTA_CASES, and runs the
# scenario_* functions here on both lanes; the test_* functions need no signed bundle. Boots go through
# the real boot stage (firmware/main.py, exec'd as at power-on) over a plain directory or littlefs on the
# NOR simulator with power cuts.
import gc
import json
import os
import sys

from mptest import raises, tmpdir
from umeter.hal.keystore_file import FileBackend
from umeter.ota import bundle, slots, trust
from umeter.ota.install import Installer, head_length
from umeter.ota.verify import Refused

HEAPSIZE = "8M"
CASES = os.getenv("OTA_CASES") or ""
MAIN = os.getenv("OTA_MAIN") or ""
_PATH0 = list(sys.path)


def case(name):
    return CASES + "/" + name + ".bnd"


def expect():
    with open(CASES + "/expect.json") as f:
        return json.load(f)


def provision(backend):
    with open(CASES + "/trust.json") as f:
        t = json.load(f)
    keys = [(alg, bytes.fromhex(pub)) for alg, pub in t["keys"]]
    trust.provision(backend, t["board"], t["arch"], keys, t["policy"], t["floor"])


def install(path, backend, root="", chunk=1024, clock=0, stop_after=None):
    """Stream a bundle file into the installer as a serial or HTTP delivery would."""
    with open(path, "rb") as f:
        first = f.read(bundle.HEADER_LEN)
        head = first + f.read(head_length(first) - bundle.HEADER_LEN)
        inst = Installer(root, backend, clock=clock)
        at = inst.begin(head)
        f.seek(len(head) + at)
        buf = bytearray(chunk)
        sent = 0
        while True:
            n = f.readinto(buf)
            if not n:
                break
            inst.write(memoryview(buf)[:n])
            sent += n
            if stop_after is not None and sent >= stop_after:
                return None
    return inst.finish()


def _forget():
    for name in list(sys.modules):
        if name == "board" or name == "umeter" or name.startswith("umeter."):
            del sys.modules[name]


def power_on(workdir):
    """A fresh boot: the boot stage's modules and the app are forgotten, main.py runs in `workdir`.
    Afterwards the stand-in app is forgotten too, so the test's own imports find the firmware again."""
    _forget()
    sys.path[:] = _PATH0
    os.chdir(workdir)
    with open(MAIN) as f:
        src = f.read()
    ns = {"__name__": "__main__"}
    exec(compile(src, "main.py", "exec"), ns)
    sys.path[:] = _PATH0
    _forget()
    return ns["meter"], ns["boot_error"]


def events(backend):
    return [(e[1], e[4]) for e in slots.pending_events(backend)]


def fresh_dir(name):
    d = tmpdir() + "/" + name
    os.mkdir(d)
    return d


def scenario_install_reject_trial_tamper():
    d = fresh_dir("dev")
    os.chdir(d)
    backend = FileBackend("ota")
    provision(backend)
    want = expect()
    install(case("v1"), backend)
    meter, err = power_on(d)
    assert meter == "app 1.0 on sim" and err is None, (meter, err)
    assert slots.confirm("", backend)
    assert power_on(d)[0] == "app 1.0 on sim" and not slots.load(backend).trial
    install(case("v2"), backend)
    assert power_on(d)[0] == "app 2.0 on sim"
    assert slots.confirm("", backend)
    # mutations: each refused with its reason, the running app unchanged
    for name, reason in want["rejected"]:
        with raises(Refused, match=reason):
            install(case(name), backend)
        assert power_on(d)[0] == "app 2.0 on sim", name
    st = slots.load(backend)
    assert st.counts[slots.COUNTERS.index("rejected")] == len(want["rejected"])
    # trial boot of an app that crashes at import: rolled back after the configured attempts
    install(case("crash"), backend)
    for i in range(slots.DEFAULT_ATTEMPTS):
        meter, err = power_on(d)
        assert meter is None and "crashes at import" in err, (meter, err)
    assert power_on(d)[0] == "app 2.0 on sim"
    ev = events(backend)
    assert [e[0] for e in ev[-4:]] == ["boot_failed"] * 3 + ["rollback"], ev
    # an app that never confirms: the same
    install(case("v3"), backend)
    for i in range(slots.DEFAULT_ATTEMPTS):
        assert power_on(d)[0] == "app 3.0 on sim"
    assert power_on(d)[0] == "app 2.0 on sim"
    assert events(backend)[-1] == ("rollback", "not confirmed after 3 boots")
    install(case("v3"), backend)
    assert power_on(d)[0] == "app 3.0 on sim"
    assert slots.confirm("", backend)
    # boot-stage verification: a changed, an added, a removed file -> the other slot, tamper recorded
    for how in ("change", "add", "remove"):
        st = slots.load(backend)
        here = slots.slot_dir("", st.active)
        before = power_on(d)[0]
        if how == "change":
            with open(here + "/umeter/app.py", "ab") as f:
                f.write(b"\n")
        elif how == "add":
            with open(here + "/umeter/extra.py", "wb") as f:
                f.write(b"")
        else:
            os.remove(here + "/umeter/__init__.py")
        after = power_on(d)[0]
        assert after is not None and after != before, (how, before, after)
        assert events(backend)[-1][0] == "tamper", events(backend)
        install(case("v2" if after.startswith("app 3") else "v3"), backend)  # both slots good again
        power_on(d)
        slots.confirm("", backend)
    # neither slot verifies: a safe state that says why (the REPL stays usable)
    for i in range(2):
        with open(slots.slot_dir("", i) + "/board.py", "ab") as f:
            f.write(b"#")
    meter, err = power_on(d)
    assert meter is None and "board.py was changed" in err, err
    assert events(backend)[-1][0] == "no_app"


def _lfs(nor):
    import vfs
    from sim.blockdev import NorBlockDev
    try:
        vfs.umount("/flash")
    except OSError:
        pass
    vfs.mount(vfs.VfsLfs2(NorBlockDev(nor)), "/flash")
    os.chdir("/flash")
    return FileBackend("ota")


def _booted_version(backend):
    """The version the boot stage verifies and would start (or None), without importing it."""
    try:
        index, m, _ = slots.select("", backend)
    except slots.NoApp:
        return None
    return m.version


def scenario_power_cut_every_flash_op():
    import vfs
    from sim.blockdev import NorBlockDev
    from sim.nor import NorFlash, PowerCut
    nor = NorFlash(256 * 1024, seed=5)
    vfs.VfsLfs2.mkfs(NorBlockDev(nor))
    backend = _lfs(nor)
    provision(backend)
    install(case("v1"), backend)
    assert _booted_version(backend) == "1.0"
    slots.confirm("", backend)
    os.chdir("/")
    snapshot = bytes(nor._mem)
    n = 0
    outcomes = {"1.0": 0, "2.0": 0}
    while True:
        n += 1
        nor._mem[:] = snapshot
        backend = _lfs(nor)
        nor.arm_cut(n)
        try:
            install(case("v2"), backend)
            cut = False
        except PowerCut:
            cut = True
        nor.disarm_cut()
        gc.collect()  # files left open by the cut are finalized while the flash is still dead
        nor.power_on()
        backend = _lfs(nor)           # power-on: littlefs mounts what the cut left
        got = _booted_version(backend)
        assert got in ("1.0", "2.0"), (n, got)
        outcomes[got] += 1
        names = [e[1] for e in slots.pending_events(backend)]
        if got == "2.0":
            assert names[-1] == "installed" and names.count("installed") == 2, (n, names)
        else:
            assert names.count("installed") == 1, (n, names)  # v1's only
            if n % 4 == 0:  # resume from what the cut left: the same head continues the upload
                install(case("v2"), backend)
                assert _booted_version(backend) == "2.0", n
        os.chdir("/")
        if not cut:
            break
    assert outcomes["1.0"] > 10 and outcomes["2.0"] >= 1, outcomes
    print("power cuts: %d flash operations in the update, outcomes %s" % (n - 1, outcomes))
    # cuts during the trial boot and the confirmation: a complete app, never a mix
    nor._mem[:] = snapshot
    backend = _lfs(nor)
    install(case("v2"), backend)
    snapshot = bytes(nor._mem)
    n = 0
    while True:
        n += 1
        nor._mem[:] = snapshot
        backend = _lfs(nor)
        nor.arm_cut(n)
        try:
            slots.select("", backend)
            slots.confirm("", backend)
            cut = False
        except PowerCut:
            cut = True
        nor.disarm_cut()
        gc.collect()  # files left open by the cut are finalized while the flash is still dead
        nor.power_on()
        backend = _lfs(nor)
        assert _booted_version(backend) == "2.0", n
        slots.confirm("", backend)
        assert trust.load(backend).counter == 2 and not slots.load(backend).trial, n
        os.chdir("/")
        if not cut:
            break


def scenario_random_cuts_during_download():
    import vfs
    from sim.nor import NorFlash, PowerCut
    from sim.rng import XorShift32
    rng = XorShift32(77)
    nor = NorFlash(256 * 1024, seed=9)
    from sim.blockdev import NorBlockDev
    vfs.VfsLfs2.mkfs(NorBlockDev(nor))
    backend = _lfs(nor)
    provision(backend)
    install(case("v1"), backend)
    slots.confirm("", backend)
    cuts = 0
    for _ in range(60):
        nor.arm_cut(10 + rng.next() % 150)
        try:
            install(case("big"), backend, chunk=512)
            break
        except PowerCut:
            cuts += 1
        nor.disarm_cut()
        gc.collect()  # files left open by the cut are finalized while the flash is still dead
        nor.power_on()
        backend = _lfs(nor)
        assert _booted_version(backend) == "1.0"
    nor.disarm_cut()
    assert cuts >= 3, cuts
    assert _booted_version(backend) == "big", (cuts, slots.pending_events(backend))
    names = [e[1] for e in slots.pending_events(backend)]
    assert names[-1] == "installed" and "attempt" in names, names
    os.chdir("/")
    print("random cuts during download: %d cuts, then installed" % cuts)


def test_boot_state_entry_round_trip_and_damage():
    st = slots.BootState()
    st.active, st.previous, st.trial, st.attempts_left = 1, 0, True, 2
    st.digests = [bytes(range(32)), bytes(range(1, 33))]
    for i in range(12):
        st.event(slots.EV_REJECTED if i % 2 else slots.EV_TAMPER, i % 2, 0xFFFFFFFF, "reason %d" % i)
    blob = slots.encode(st)
    back = slots.decode(blob)
    assert back.events == st.events and back.digests == st.digests and back.counts == st.counts
    assert len(back.events) == slots.MAX_EVENTS and back.next_seq == 13
    for i in (0, 5, len(blob) - 1):
        bad = bytearray(blob)
        bad[i] ^= 0x10
        with raises(slots.BootStateError):
            slots.decode(bytes(bad))
    gc.collect()


def test_unprovisioned_device_refuses_and_development_mode_is_reported():
    d = fresh_dir("bare")
    os.chdir(d)
    backend = FileBackend("ota")
    with raises(Refused, match="not provisioned"):
        Installer("", backend).begin(b"UMTRBNDL\x01\x00\x00\x01\x00\x01\x01\x01")
    info = slots.identity("", backend)
    assert info["mode"] == "development" and info["note"] == "unverified development deploy"


def scenario_http_delivery():
    from umeter.ota import http
    d = fresh_dir("http")
    os.chdir(d)
    backend = FileBackend("ota")
    provision(backend)
    base = os.getenv("OTA_URL")
    install(case("v1"), backend)
    slots.confirm("", backend)
    with raises(OSError, match="stopped at"):      # the server drops the first download half-way
        http.fetch(base + "/big.bnd?drop", Installer("", backend))
    assert power_on(d)[0] == "app 1.0 on sim"
    sid = http.fetch(base + "/big.bnd", Installer("", backend))   # resumes with a Range request
    assert power_on(d)[0] == "app big on sim"
    active = slots.slot_dir("", slots.load(backend).active)
    assert sid == bundle.software_id(slots.read_head(active + "/" + slots.MANIFEST)[0])
    with raises(Refused, match="bundle is for board(s)"):
        http.fetch(base + "/bad_board.bnd", Installer("", backend))
    with raises(OSError, match="HTTP 404"):
        http.fetch(base + "/missing.bnd", Installer("", backend))
    assert power_on(d)[0] == "app big on sim"
    print("http: ok")


def scenario_key_rotation():
    d = fresh_dir("rot")
    os.chdir(d)
    backend = FileBackend("ota")
    provision(backend)
    install(case("v1"), backend)
    power_on(d)
    slots.confirm("", backend)
    install(case("rotate"), backend)
    assert power_on(d)[0] == "app 4.0 on sim"
    assert len(trust.load(backend).keys) == 2            # applied only at confirm
    slots.confirm("", backend)
    t = trust.load(backend)
    assert len(t.keys) == 2 and len(t.revoked) == 1     # ed out, ed2 in, lms kept
    assert power_on(d)[0] == "app 4.0 on sim"            # signed by the key it revoked: still boots
    with raises(Refused, match="signature by revoked ed25519 key"):
        install(case("after_old_key"), backend)
    install(case("after_new_key"), backend)
    assert power_on(d)[0] == "app 5.0 on sim"
