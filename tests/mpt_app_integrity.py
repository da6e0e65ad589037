# Billing integrity of the real app on the unix port (issue 11): attacks on the SPI flash with a clip
# and on the State area never lower a register, are reported (status, a sealed event, the MCU's tamper
# log) and are still reported two boots later; the high-water mark never moves back.
from mpt_integrity_kit import (OTHER_KEY, SS, STATE_BASE, STATE_SIZE, SmallBoard, advance, boot,
                               checkpoint_records, erase, flip, image, not_below, position, put, regs,
                               sector_of, tamper_events)
from mptest import tmpdir
from umeter.app import Meter

HEAPSIZE = "16M"


def _attack_then_three_boots(name, attack, statuses):
    board = SmallBoard(tmpdir() + "/" + name)
    m = Meter(board)
    advance(m, 4)
    ctx = {"image": image(board.dev), "m": m, "board": board}
    advance(m, 4)
    before = regs(m)
    pos = position(m)
    assert m.status()["tamper"] is None and before["1.8.0"] > 500  # mWh: 3 s of 1150 W
    attack(board, m, ctx)
    first = None
    for n in range(3):
        m = boot(board)
        st = m.status()
        not_below(regs(m), before)
        assert st["tamper"] is not None, (name, n)
        if n == 0:
            first = st["tamper"]
            assert first["status"] in statuses, (name, first)
        # later boots: the tamper log says so ("recorded"), or the flash still shows it (foreign data)
        log = st["tamper_log"]
        assert log["active"] and log["count"] >= 1 and log["events"], (name, log)
        assert position(m) >= pos, (name, position(m), pos)
        advance(m, 1)
        assert position(m) > pos
        pos = position(m)
        before = regs(m)
    assert tamper_events(m), name  # sealed on flash too (the newest boots' records are intact)
    return first


def test_bit_flip_in_the_newest_checkpoint():
    def attack(board, m, ctx):
        seq, rec = checkpoint_records(m)[-1]
        flip(board.dev, rec)
        assert dict(boot_journal(board).records())[seq] != rec  # the journal reads the altered record

    first = _attack_then_three_boots("flip", attack, ("chain_broken",))
    assert "high-water mark" in first["reason"]


def boot_journal(board):
    from umeter.store.journal import Journal
    from umeter.store.region import partitions

    return Journal(partitions(board.dev, board.PARTITIONS)["journal"])


def test_head_sector_erased():
    def attack(board, m, ctx):
        seq, rec = list(m.journal.records())[-1]
        erase(board.dev, sector_of(board.dev, rec), SS)

    _attack_then_three_boots("head", attack, ("rolled_back", "chain_broken"))


def test_older_image_put_back():
    def attack(board, m, ctx):
        put(board.dev, 0, ctx["image"])

    first = _attack_then_three_boots("older", attack, ("rolled_back",))
    assert first["flash_seq"] < first["mark_seq"]


def test_state_erased_and_every_checkpoint_since_a_time_damaged():
    def attack(board, m, ctx):
        for seq, rec in checkpoint_records(m)[3:]:
            flip(board.dev, rec)
        erase(board.dev, STATE_BASE, STATE_SIZE)

    # the older checkpoints still verify: without the mark's floors they would come back silently
    _attack_then_three_boots("state", attack, ("chain_broken",))


def test_another_meters_image_spliced():
    def attack(board, m, ctx):
        other = SmallBoard(tmpdir() + "/other", key=OTHER_KEY)
        om = Meter(other)
        advance(om, 9)
        put(board.dev, 0, image(other.dev, 0, STATE_BASE))

    _attack_then_three_boots("splice", attack, ("chain_broken", "rolled_back"))


def test_another_meters_sector_at_the_head():
    def attack(board, m, ctx):
        other = SmallBoard(tmpdir() + "/other2", key=OTHER_KEY)
        om = Meter(other)
        advance(om, 8)
        head = sector_of(board.dev, list(m.journal.records())[-1][1])
        put(board.dev, head, image(other.dev, head, SS))

    _attack_then_three_boots("splice_head", attack, ("chain_broken", "rolled_back"))


def test_brown_out_loops_just_before_each_checkpoint():
    board = SmallBoard(tmpdir() + "/brownout")
    m = Meter(board)
    advance(m, 1)
    before = regs(m)
    pos = position(m)
    per_interval = 1150.0 * board.CHECKPOINT_S / 3.6 + 1150.0 / 3.6  # mWh: one interval and a window
    for _ in range(10):
        m.run_samples(m._next_cp - m.engine.t - 200)  # a block short of the checkpoint: reset
        lost_at_most = regs(m)["1.8.0"] - before["1.8.0"]
        m = boot(board)
        st = m.status()
        assert st["tamper"] is None and st["tamper_log"]["count"] == 0, st["tamper"]
        not_below(regs(m), before)
        assert lost_at_most <= per_interval
        assert position(m) >= pos
        m.run_samples(m._next_cp - m.engine.t + 200)  # this boot gets to its checkpoint
        assert position(m) > pos
        pos = position(m)
        before = regs(m)


def test_power_fail_warning_and_clean_stop_lose_no_energy():
    board = SmallBoard(tmpdir() + "/pf")
    m = Meter(board)
    for _ in range(3):
        m.run_samples(4000 * 3 + 1234)  # mid-window, between checkpoints
        m.power_fail()
        fu = m.engine.register_fu("1.8.0")
        m = boot(board)
        assert m.engine.register_fu("1.8.0") == fu and m.status()["tamper"] is None
    m.run_samples(4000 * 2 + 77)
    m.stop()
    fu = m.engine.register_fu("1.8.0")
    assert boot(board).engine.register_fu("1.8.0") == fu
