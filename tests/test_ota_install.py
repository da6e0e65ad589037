"""Signed OTA on CPython (the firmware's pure-logic modules): the streaming installer into slots on a
directory, every refusal with its reason and the old app still the one that boots; every single-byte
change of a manifest and of each signature; trust and boot-state entries refuse damage."""
import os

import pytest

import ota_cases as oc
from umeter.hal.keystore_file import FileBackend
from umeter.ota import bundle, slots, trust
from umeter.ota.install import Installer
from umeter.ota.verify import Refused


@pytest.fixture(scope="module")
def keys():
    return {"ed": oc.EdKey(), "ed2": oc.EdKey(), "lms": oc.LmsKey(), "rogue": oc.EdKey()}


class Device:
    def __init__(self, root, keys, policy=bundle.POLICY_ED25519, floor=bundle.POLICY_ED25519):
        self.root = str(root) + "/"
        self.backend = FileBackend(self.root + "ota")
        trust.provision(self.backend, oc.BOARD, oc.ARCH, [(k.alg, k.public) for k in keys], policy, floor)

    def install(self, data, clock=0, chunk=700):
        head, payload = oc.split(data)
        inst = Installer(self.root, self.backend, clock=clock)
        at = inst.begin(head)
        for i in range(at, len(payload), chunk):
            inst.write(payload[i:i + chunk])
        return inst.finish()

    def boot(self):
        """What the boot stage would start: (slot, version)."""
        index, m, _ = slots.select(self.root, self.backend)
        return slots.NAMES[index], m.version

    def confirm(self):
        assert slots.confirm(self.root, self.backend)

    def events(self):
        return [(e[1], e[4]) for e in slots.pending_events(self.backend)]


def refused(dev, data, reason, clock=0):
    before = slots.load(dev.backend)
    with pytest.raises(Refused) as e:
        dev.install(data, clock=clock)
    assert reason in str(e.value), str(e.value)
    after = slots.load(dev.backend)
    assert (after.active, after.digests[after.active]) == (before.active, before.digests[before.active])
    rejected = slots.COUNTERS.index("rejected")
    assert after.counts[rejected] == before.counts[rejected] + 1
    assert dev.boot()[1] == "1.0"  # the old app still verifies and boots
    return str(e.value)


def test_install_trial_confirm_and_mutations(tmp_path, keys):
    dev = Device(tmp_path, [keys["ed"]])
    first = oc.make(oc.app_files("1.0"), [keys["ed"]], counter=2)
    sid = dev.install(first)
    assert dev.boot() == ("a", "1.0") and slots.load(dev.backend).trial
    dev.confirm()
    assert not slots.load(dev.backend).trial and trust.load(dev.backend).counter == 2
    assert sid == bundle.software_id(oc.parts(first)[0])
    ed = [keys["ed"]]
    files = oc.app_files("2.0")
    refused(dev, oc.make(files, ed, version="2.0", counter=2, boards=("esp32_devkitc",)),
            "for board(s) esp32")
    refused(dev, oc.make(files, ed, version="2.0", counter=1), "security counter 1 below the installed 2")
    refused(dev, oc.make(files, ed, version="2.0", counter=2, issued=100, expires=200), "expired")
    refused(dev, oc.make(files, ed, version="2.0", counter=2, expires=oc.ISSUED + 10), "expired",
            clock=oc.ISSUED + 20)
    refused(dev, oc.make(files, [keys["rogue"]], version="2.0", counter=2), "unknown ed25519 key")
    refused(dev, oc.make(files, ed, version="2.0", counter=2, arch="xtensawin"), "arch xtensawin")
    refused(dev, oc.make(files, ed, version="2.0", counter=2, policy=bundle.POLICY_LMS),
            "needs a trusted lms")
    # payload mutations: truncated / extended file, an extra file past the manifest
    good = oc.make(files, ed, version="2.0", counter=2)
    refused(dev, good[:-1], "bundle truncated")
    refused(dev, good + b"\x00", "bundle longer than its manifest says")
    refused(dev, good + b"extra file bytes", "bundle longer than its manifest says")
    # (other files: identical files already in the slot are kept, and a resume starts after them)
    files_c = oc.app_files("2.0c")
    m = oc.manifest_for(files_c, version="2.0c", counter=2)
    bad = oc.assemble(m, oc.sigblock_for(m, ed), b"".join(files_c.values()).replace(b"app 2.0c", b"app 6.6c"))
    refused(dev, bad, "SHA-256 does not match the manifest")
    files_e = oc.app_files("2.0e")
    longer = dict(files_e)
    longer["umeter/app.py"] += b"# extended\n"
    m = oc.manifest_for(files_e, version="2.0e", counter=2)
    refused(dev, oc.assemble(m, oc.sigblock_for(m, ed), b"".join(longer.values())), "does not match")
    # a replay of the installed bundle, then of an older valid one
    refused(dev, oc.make(oc.app_files("1.0"), ed, counter=2), "already installed")
    refused(dev, oc.make(oc.app_files("0.9"), ed, version="0.9", counter=1), "below the installed 2")
    assert slots.load(dev.backend).counts[slots.COUNTERS.index("rejected")] == 14
    assert dev.events()[-1] == ("rejected", "security counter 1 below the installed 2")
    # the good one still installs after all that
    dev.install(good)
    assert dev.boot() == ("b", "2.0")


def test_every_byte_of_manifest_and_signatures(tmp_path, keys):
    dev = Device(tmp_path, [keys["ed"], keys["lms"]], policy=bundle.POLICY_HYBRID,
                 floor=bundle.POLICY_ED25519)
    hybrid = [keys["ed"], keys["lms"]]
    dev.install(oc.make(oc.app_files("1.0"), hybrid))
    dev.boot()
    dev.confirm()
    files = oc.app_files("2.0")
    manifest = oc.manifest_for(files, version="2.0")
    sigblock = oc.sigblock_for(manifest, hybrid)
    payload = b"".join(files.values())
    from umeter.ota.verify import accept
    st_trust = trust.load(dev.backend)
    accept(st_trust, manifest, sigblock)
    # Each signature on its own under the policy of its alg (so a flipped LMS byte does not pay for an
    # Ed25519 verification too): every byte of the manifest under both, every byte of each signature entry.
    reasons = set()
    for key, policy in ((keys["ed"], bundle.POLICY_ED25519), (keys["lms"], bundle.POLICY_LMS)):
        single = trust.Trust("sim", "py", 0, 0, policy, policy, [(key.alg, key.public)])
        block = oc.sigblock_for(manifest, [key])
        accept(single, manifest, block)
        for i in range(len(manifest)):
            m = bytearray(manifest)
            m[i] ^= 0x01 << (i % 8)
            with pytest.raises(Refused) as e:
                accept(single, bytes(m), block)
            reasons.add(str(e.value).split(":")[0])
        for i in range(len(block)):
            b = bytearray(block)
            b[i] ^= 0x01 << (i % 8)
            with pytest.raises(Refused) as e:
                accept(single, manifest, bytes(b))
            reasons.add(str(e.value).split(":")[0])
    assert "manifest" in reasons and "sigblock" in reasons, reasons
    assert any(r.startswith("signature by") for r in reasons), reasons
    # through the installer, a sample: the old app still runs afterwards
    for i in (0, len(manifest) // 2, len(manifest) - 1):
        m = bytearray(manifest)
        m[i] ^= 0x01
        refused(dev, oc.assemble(bytes(m), sigblock, payload), "")
    # hybrid with one signature missing or wrong
    refused(dev, oc.assemble(manifest, oc.sigblock_for(manifest, [keys["ed"]]), payload),
            "policy hybrid needs a valid lms signature")
    refused(dev, oc.assemble(manifest, oc.sigblock_for(manifest, [keys["lms"]]), payload),
            "policy hybrid needs a valid ed25519 signature")
    other = oc.manifest_for(files, version="2.1")
    ed, lms = keys["ed"], keys["lms"]
    wrong = bundle.encode_sigblock([(ed.alg, ed.kid, ed.sign(bundle.signed_message(manifest))),
                                    (lms.alg, lms.kid, lms.sign(bundle.signed_message(other)))])
    refused(dev, oc.assemble(manifest, wrong, payload), "signature by lms key")
    # a policy change down to lms is allowed (floor ed25519); below a floor: test_policy_floor_keys_rotation
    dev.install(oc.make(files, hybrid, version="2.0", policy=bundle.POLICY_LMS))
    assert dev.boot() == ("b", "2.0")


def test_policy_floor_keys_rotation(tmp_path, keys):
    dev = Device(tmp_path, [keys["ed"], keys["lms"]], policy=bundle.POLICY_HYBRID, floor=bundle.POLICY_LMS)
    hybrid = [keys["ed"], keys["lms"]]
    dev.install(oc.make(oc.app_files("1.0"), hybrid))
    dev.boot()
    dev.confirm()
    refused(dev, oc.make(oc.app_files("2.0"), hybrid, version="2.0", policy=bundle.POLICY_ED25519),
            "policy ed25519 below the device's floor lms")
    # rotation: add ed2, revoke ed, signed by ed (+lms); applied only at confirm
    rot = oc.make(oc.app_files("2.0"), hybrid, version="2.0",
                  key_ops=[(bundle.KEY_ADD, keys["ed2"].alg, keys["ed2"].public),
                           (bundle.KEY_REVOKE, keys["ed"].alg, keys["ed"].public)])
    dev.install(rot)
    assert dev.boot() == ("b", "2.0")
    assert trust.load(dev.backend).find(keys["ed"].alg, keys["ed"].kid) is not None  # not yet
    dev.confirm()
    t = trust.load(dev.backend)
    assert t.find(keys["ed"].alg, keys["ed"].kid) is None and t.is_revoked(keys["ed"].alg, keys["ed"].kid)
    assert dev.boot() == ("b", "2.0")  # the slot signed by the key it revoked still boots
    refused_msg = None
    with pytest.raises(Refused) as e:
        dev.install(oc.make(oc.app_files("3.0"), hybrid, version="3.0"))
    refused_msg = str(e.value)
    assert "revoked ed25519 key" in refused_msg
    dev.install(oc.make(oc.app_files("3.0"), [keys["ed2"], keys["lms"]], version="3.0"))
    assert dev.boot() == ("a", "3.0")


def test_trial_rollback_and_tamper(tmp_path, keys):
    dev = Device(tmp_path, [keys["ed"]])
    dev.install(oc.make(oc.app_files("1.0"), [keys["ed"]]))
    dev.boot()
    dev.confirm()
    dev.install(oc.make(oc.app_files("2.0"), [keys["ed"]], version="2.0"))
    for _ in range(slots.DEFAULT_ATTEMPTS):
        assert dev.boot() == ("b", "2.0")  # never confirmed
    assert dev.boot() == ("a", "1.0")
    assert ("rollback", "not confirmed after 3 boots") in dev.events()
    assert trust.load(dev.backend).counter == 1
    # tamper: change, add, remove a file in the active slot -> the other slot (if it verifies)
    dev.install(oc.make(oc.app_files("2.1"), [keys["ed"]], version="2.1"))
    dev.boot()
    dev.confirm()
    for how in ("change", "add", "remove"):
        active = slots.slot_dir(dev.root, slots.load(dev.backend).active)
        other = slots.slot_dir(dev.root, 1 - slots.load(dev.backend).active)
        other_version = bundle.parse_manifest(slots.read_head(other + "/" + slots.MANIFEST)[0]).version
        if how == "change":
            with open(active + "/umeter/app.py", "ab") as f:
                f.write(b"# evil\n")
        elif how == "add":
            with open(active + "/umeter/evil.py", "wb") as f:
                f.write(b"x = 1\n")
        else:
            os.remove(active + "/board.py")
        assert dev.boot()[1] == other_version
        assert dev.events()[-1][0] == "tamper", dev.events()
        # reinstall into the tampered slot so both verify again
        st = slots.load(dev.backend)
        version = "2.%d" % (3 + len(how))
        dev.install(oc.make(oc.app_files(version), [keys["ed"]], version=version))
        dev.boot()
        dev.confirm()
        assert st.active != slots.load(dev.backend).active
    # neither verifies: NoApp with both reasons
    for i in range(2):
        with open(slots.slot_dir(dev.root, i) + "/board.py", "ab") as f:
            f.write(b"#")
    with pytest.raises(slots.NoApp) as e:
        dev.boot()
    assert "board.py was changed" in str(e.value)


def test_damaged_entries_are_reported(tmp_path, keys):
    dev = Device(tmp_path, [keys["ed"]])
    blob = bytearray(dev.backend.load(trust.BLOB))
    blob[3] ^= 1
    dev.backend.save(trust.BLOB, bytes(blob))
    with pytest.raises(trust.TrustError, match="damaged"):
        trust.load(dev.backend)
    with pytest.raises(Refused, match="update state unusable"):
        dev.install(oc.make(oc.app_files("1.0"), [keys["ed"]]))
    with pytest.raises(trust.TrustError, match="already provisioned"):
        trust.provision(dev.backend, "sim", "py", [(keys["ed"].alg, keys["ed"].public)], 1, 1)
    st = slots.BootState()
    st.event(slots.EV_TAMPER, 1, 5, "x" * 100)
    assert slots.decode(slots.encode(st)).events == st.events
    raw = bytearray(slots.encode(st))
    raw[10] ^= 4
    with pytest.raises(slots.BootStateError):
        slots.decode(bytes(raw))
    for _ in range(20):
        st.event(slots.EV_REJECTED, None, 0, "y" * 40)
    assert len(slots.encode(st)) <= 470 and st.counts[slots.COUNTERS.index("rejected")] == 20


def test_interrupted_first_install_keeps_development_boot(tmp_path, keys):
    dev = Device(tmp_path, [keys["ed"]])
    head, payload = oc.split(oc.make(oc.app_files("1.0"), [keys["ed"]]))
    inst = Installer(dev.root, dev.backend)
    inst.begin(head)
    inst.write(payload[:10])     # the connection breaks here: slot_a exists, nothing is pinned
    with pytest.raises(slots.NeverInstalled):
        slots.select(dev.root, dev.backend)   # main.py then boots the development deploy at /
    dev.install(oc.make(oc.app_files("1.0"), [keys["ed"]]))
    assert dev.boot() == ("a", "1.0")
