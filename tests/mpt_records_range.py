# Register range of the checkpoint record on the unix port, both lanes: registers past 2**40 and
# 2**48 mWh (version 1 filled at 2**40) go records.checkpoint -> seal -> journal on the simulated NOR
# -> a fresh mount -> open -> decode -> Engine.restore exactly; values that do not fit are refused
# (ValueError) instead of being truncated by struct.pack; version 1 records still decode.
import struct

from mptest import raises, tmpdir
from sim.nor import NorFlash
from umeter import records
from umeter.crypto import seal
from umeter.hal.keystore_file import open_keystore
from umeter.metering import obis
from umeter.metering.engine import FRAC_BITS, Engine
from umeter.store import Journal, Region

HEAPSIZE = "2M"
KEY = bytes(range(3, 35))
MWH_20Y_20KW = 20000 * 8766 * 20 * 1000  # mWh: 20 years at the sim board's 20 kW maximum (~2**41.7)


def snap_for(mwh_list, t, frac_fu=0):
    return [1, FRAC_BITS, t] + [(m << FRAC_BITS) + frac_fu + k for k, m in enumerate(mwh_list)]


def test_checkpoint_round_trip_far_past_2_40_mwh():
    for regs in ([(1 << 40) - 1, 1 << 40, (1 << 40) + 1, 0],
                 [(1 << 48) + 3, 1 << 48, MWH_20Y_20KW, 10 * MWH_20Y_20KW],
                 [(1 << 64) - 1, 0, 5, (1 << 63) + 1]):
        snap = snap_for(regs, t=(1 << 40) + 17, frac_fu=(1 << FRAC_BITS) - 4)
        payload = records.checkpoint(snap)
        assert len(payload) == 1 + struct.calcsize(records.CHECKPOINT_FORMAT) == 59
        typ, fields = records.decode(payload)
        assert typ == records.REC_CHECKPOINT and fields["version"] == 2
        assert fields["snapshot"] == snap


def test_checkpoint_refuses_values_that_do_not_fit():
    ok = snap_for([1, 2, 3, 4], t=5)
    for bad, why in (([1, FRAC_BITS, 5, 1 << (64 + FRAC_BITS), 0, 0, 0], "does not fit"),  # 2**64 mWh
                     ([1, FRAC_BITS, 1 << 64, 0, 0, 0, 0], "does not fit"),  # engine time
                     ([1, FRAC_BITS, 5, -1, 0, 0, 0], "non-negative"),
                     ([1, FRAC_BITS, -5, 0, 0, 0, 0], "does not fit"),
                     ([2] + ok[1:], "snapshot"),
                     (ok[:6], "snapshot"),
                     ([1, 33] + ok[2:], "frac_bits")):
        with raises(ValueError, match=why):
            records.checkpoint(bad)
    # a body whose remainder is not below 2**frac_bits is refused, not folded into the mWh
    body = struct.pack(records.CHECKPOINT_FORMAT, 2, FRAC_BITS, 5, 1, 1 << FRAC_BITS, 0, 0, 0, 0, 0, 0)
    with raises(ValueError, match="remainder"):
        records.decode(bytes((records.REC_CHECKPOINT,)) + body)
    with raises(ValueError, match="checkpoint"):
        records.decode(bytes((records.REC_CHECKPOINT,)) + body[:-1])
    # events: a code beyond u8 is refused too
    with raises(ValueError, match="does not fit"):
        records.event(256)


def test_version_1_checkpoints_still_decode():
    v1 = [1, FRAC_BITS, 4000 * 3600, (123456 << FRAC_BITS) + 77, 0, (1 << 63) + 5, (1 << 64) - 1]
    payload = bytes((records.REC_CHECKPOINT,)) + struct.pack(records.CHECKPOINT_FORMAT_V1, *v1)
    typ, fields = records.decode(payload)
    assert fields["snapshot"] == v1 and fields["version"] == 1
    eng = Engine(4000, 12, 200)
    eng.restore(fields["snapshot"])
    assert eng.register_fu(obis.A_IMPORT) == v1[3] and eng.t == v1[2]


def test_registers_past_2_40_and_2_48_mwh_through_seal_journal_and_restore():
    nor = NorFlash(64 * 1024, path=tmpdir() + "/nor.img")
    region = Region(nor, 16 * 1024, 32 * 1024)
    ks = open_keystore(tmpdir() + "/ks")
    ks.provision(KEY)
    sealer = seal.Sealer(ks, ks.epoch)
    sealer.resume(0, None)
    journal = Journal(region)
    eng = Engine(4000, 12, 200)
    written = []
    # registers just below, at and past 2**40 and 2**48 mWh, with sub-mWh remainders; time past 2**40
    for k, base in enumerate(((1 << 40) - 2, 1 << 40, (1 << 48) - 1, (1 << 48) + 12345, 50 * MWH_20Y_20KW)):
        snap = [1, FRAC_BITS, (1 << 40) + k * 4000,
                (base << FRAC_BITS) + (1 << FRAC_BITS) - 1 - k,
                ((base >> 3) << FRAC_BITS) + k,
                (base + 7 << FRAC_BITS) + (1 << 23),
                k]
        eng.restore(snap)
        seq = journal.next_seq
        assert journal.append(sealer.seal(seq, records.checkpoint(eng.snapshot()), anchor=True)) == seq
        written.append((seq, snap))
    # reboot: a fresh mount of the same flash, a fresh opener, the newest verified checkpoint
    journal = Journal(Region(nor, 16 * 1024, 32 * 1024))
    opener = seal.Opener(ks)
    got = []
    for seq, rec in journal.records():
        opener.reset()  # checkpoints are anchors (SEALED.md): each verifies on its own
        typ, fields = records.decode(opener.open(seq, rec))
        assert typ == records.REC_CHECKPOINT
        got.append((seq, fields["snapshot"]))
    assert got == written
    restored = Engine(4000, 12, 200)
    restored.restore(got[-1][1])
    snap = written[-1][1]
    assert [restored.register_fu(c) for c in obis.REGISTERS] == snap[3:]
    assert restored.registers()[obis.A_IMPORT] == 50 * MWH_20Y_20KW
    assert restored.t == snap[2]
    print("restored 1.8.0 = %d mWh (%.1f x 20 years at 20 kW), 2**48 mWh crossed exactly"
          % (restored.registers()[obis.A_IMPORT], 50.0))
