# The meter app on the unix port with test boards: records, checkpoints, restarts, refusal without a
# key, faults, power-fail checkpoints, rollback detection and the metering-IC path.
from app_boards import IcBoard, SampleBoard
from mptest import tmpdir
from umeter import records
from umeter.app import Meter
from umeter.crypto.seal import Opener

HEAPSIZE = "16M"


def _decoded(meter):
    opener = Opener(meter.keystore)
    out = []
    for seq, rec in meter.journal.records():
        out.append((seq, records.decode(opener.open(seq, rec))))
    return out


def test_records_checkpoints_and_restart():
    board = SampleBoard(tmpdir())
    m = Meter(board)
    m.run_samples(4000 * 125)
    st = m.status()
    assert st["refusal"] is None and st["tamper"] is None and st["faults"] == 0
    kinds = [typ for _, (typ, _) in _decoded(m)]
    assert kinds[0] == records.REC_EVENT                       # boot
    assert kinds.count(records.REC_CHECKPOINT) == 12           # every 10 s
    assert kinds.count(records.REC_PROFILE) == 2               # 1-minute profile
    e1 = m.engine.registers()["1.8.0"]
    assert 1150.0 * 123 / 3.6 < e1 < 1150.0 * 125 / 3.6        # mWh
    # reboot on the same flash: registers come back from the newest checkpoint
    m2 = Meter(board)
    assert m2.restored_from > 0 and m2.tamper is None
    e2 = m2.engine.registers()["1.8.0"]
    assert e1 - 1150.0 * 10 / 3.6 <= e2 <= e1
    assert 120 * 4000 <= m2.engine.t < 121 * 4000  # the checkpoint taken at the first window end past 120 s


def test_no_key_refuses_to_store_and_says_why():
    board = SampleBoard(tmpdir(), provision=False)
    m = Meter(board)
    m.run_samples(4000 * 12)
    st = m.status()
    assert "no device key is provisioned" in st["refusal"]
    assert st["records_stored"] == 0 and st["records_refused"] >= 2
    assert m.journal.last_seq == 0
    assert st["window"]["32.7.0"] > 229.0  # metering goes on


def test_fault_in_a_window_never_stops_metering():
    board = SampleBoard(tmpdir())
    m = Meter(board)
    real_feed = m.engine.feed
    calls = [0]

    def flaky(buf):
        calls[0] += 1
        if calls[0] == 30:
            raise RuntimeError("injected")
        return real_feed(buf)

    m.engine.feed = flaky
    m.run_samples(4000 * 5)
    assert m.faults == 1 and "injected" in m.last_fault
    assert m.status()["windows"] >= 3
    events = [f for _, (typ, f) in _decoded(m) if typ == records.REC_EVENT]
    assert any(e["event"] == "fault" for e in events)


def test_power_fail_edge_checkpoints_at_once():
    import micropython

    board = SampleBoard(tmpdir())
    m = Meter(board)
    m.run_samples(4000 * 3)
    before = m.journal.last_seq
    board.pf_callback(None)
    m.step()  # scheduled callbacks run at the next bytecode boundary
    for _ in range(3):
        micropython.schedule(lambda _: None, 0)
        m.step()
    got = _decoded(m)
    assert m.journal.last_seq >= before + 2
    assert any(typ == records.REC_EVENT and f["event"] == "power_fail" for _, (typ, f) in got)
    assert got[-1][1][0] == records.REC_CHECKPOINT


def test_rolled_back_flash_raises_tamper_and_meters_on():
    board = SampleBoard(tmpdir())
    m = Meter(board)
    m.run_samples(4000 * 12)          # one checkpoint: high-water mark moves
    old = board.dev.read(0, board.dev.size)
    m.run_samples(4000 * 20)          # two more checkpoints
    epoch_before = m.status()["key"]["epoch"]
    # restore the older image with a clip
    for addr in range(0, board.dev.size, board.dev.sector_size):
        board.dev.erase_sector(addr)
        for p in range(0, board.dev.sector_size, 256):
            chunk = old[addr + p:addr + p + 256]
            if chunk != b"\xff" * 256:
                board.dev.program(addr + p, chunk)
    before = board.ks.high_water().registers  # what the last durable checkpoint held
    assert before["1.8.0"] > 1150.0 * 25 / 3.6
    m2 = Meter(board)
    st = m2.status()
    assert st["tamper"] is not None and st["tamper"]["status"] == "rolled_back"
    for code, mwh in before.items():  # the high-water mark's floors: the older image lowers nothing
        assert m2.engine.registers()[code] >= mwh, code
    assert st["tamper_log"]["count"] == 1 and st["tamper_log"]["events"][0]["code"] == 1
    assert st["key_storage"]["kind"] == "unknown"  # the test board declares no KEY_STORAGE
    assert st["key"]["epoch"] == epoch_before + 1  # a new epoch per boot: no nonce is reused
    m2.run_samples(4000 * 3)
    assert m2.status()["window"]["32.7.0"] > 229.0
    events = [f for _, (typ, f) in _decoded(m2) if typ == records.REC_EVENT]
    assert any(e["event"] == "tamper" for e in events)
    m2.checkpoint()
    st = Meter(board).status()  # a later boot: the verdict is ok, the tamper log still says so
    assert st["tamper"]["status"] == "recorded" and st["tamper_log"]["active"]


def test_metering_ic_board():
    from sim.atm90e32 import Atm90e32Sim

    sim = Atm90e32Sim(phases=1)
    sim.set_grid(0, vrms=230.0, irms=10.0, phase_deg=0.0)
    now = [0]
    board = IcBoard(tmpdir(), sim, lambda: now[0])
    m = Meter(board)
    for _ in range(130):
        sim.advance(1.0)
        now[0] += 1000
        m.step()
    st = m.status()
    assert abs(st["window"]["32.7.0"] - 230.0) < 0.05
    assert abs(st["window"]["1.7.0"] - 2300.0) < 2.0
    e = st["registers_wh"]["1.8.0"]
    assert abs(e - 2300.0 * 130 / 3600) < 0.5
    # load profile from the chip's registers too: 1-minute intervals ending at 60 s and 120 s
    from umeter.metering.engine import decode_profile

    profiles = [decode_profile(f) for _, (typ, f) in _decoded(m) if typ == records.REC_PROFILE]
    assert [p["t_end_s"] for p in profiles] == [60, 120]
    for p in profiles:
        assert abs(p["1.8.0"] - 2300.0 * 60 / 3.6) < 2300.0 / 3.6   # mWh, within one poll
        assert abs(p["32.5.0"] - 230.0) < 0.05 and abs(p["1.6.0"] - 2300.0) < 5.0
    m.checkpoint()
    m2 = Meter(board)
    assert abs(m2.status()["registers_wh"]["1.8.0"] - e) < 0.01
