"""Power-cut torture of State under CPython: the exhaustive sweep from the first format on, then 4,000
random cuts with torn programs and torn erases.

The sweep cuts at every program/erase of a short workload that starts on a blank device, and again
at each of the first operations after that cut (mount-time recovery included). Each random round cuts
power at a random program/erase (inside the first format, puts, deletes, automatic and explicit
compactions), remounts and checks every key against the acknowledged operations (harness/state_torture.py).
"""
import pytest
import state_cases
from harness import state_torture
from umeter.store import StoreError
from umeter.store.state import State

CONFIGS = [
    # (cuts, seed, geometry)
    (1000, 1, dict(sectors=2)),
    (1000, 2, dict(sectors=3, max_ops=200, fresh_every=0)),
    (1000, 3, dict(sectors=4, nkeys=30, fresh_every=0)),
    (1000, 4, dict(sectors=5, sector_size=1024, nkeys=8, max_ops=40, fresh_every=10)),
]


@pytest.mark.parametrize("cuts,seed,geometry", CONFIGS)
def test_power_cut_torture(cuts, seed, geometry):
    r = state_torture.run(cuts, seed=seed, **geometry)
    assert r["cuts"] == cuts
    assert r["lost"] == 0 and r["corrupt"] == 0, r
    assert r["guards_blank"], "State wrote outside its region"
    # The cuts really landed everywhere: inside compactions, and tearing slots (skipped on mount).
    assert r["cuts_in_compaction"] >= cuts // 5
    assert r["corrupt_skipped"] >= cuts // 20
    assert r["puts"] >= cuts and r["deletes"] >= cuts // 4
    if geometry.get("fresh_every", 25):
        assert r["fresh_devices"] >= 10 and r["first_format_cuts"] >= 1, r
    else:                             # one device all along: its wear is the rotation's
        counts = r["erase_counts"]
        assert max(counts) <= 1.1 * sum(counts) / len(counts) + 1


@pytest.mark.parametrize("sectors,sector_size,second", [(2, 1024, 0), (2, 1024, 6), (3, 512, 3),
                                                         (2, 4096, 2)])
def test_power_cut_sweep_from_first_format(sectors, sector_size, second):
    cuts = state_cases.check_power_cut_sweep([(sectors, sector_size, second)])
    assert cuts >= 70 * (second + 1)


def test_total_cuts_at_least_2000():
    assert sum(c for c, _, _ in CONFIGS) >= 2000


class _LosesUpdates(State):
    """Mutant: every 7th put of an existing key is acknowledged without being written."""
    n = 0

    def put(self, key, value):
        _LosesUpdates.n += 1
        if _LosesUpdates.n % 7 == 0 and key in self:
            return
        State.put(self, key, value)


class _FlipsBytes(State):
    """Mutant: returns a damaged value now and then."""

    def get(self, key, default=None):
        v = State.get(self, key, default)
        if v and len(v) > 3 and v[0] % 5 == 0:
            v = bytes([v[0] ^ 1]) + v[1:]
        return v


@pytest.mark.parametrize("mutant,field", [(_LosesUpdates, "lost"), (_FlipsBytes, "corrupt")])
def test_torture_catches_a_broken_store(monkeypatch, mutant, field):
    monkeypatch.setattr(state_torture, "State", mutant)
    r = state_torture.run(60, seed=9)
    assert r[field] > 0
    s = state_torture.sweep(second=1)
    assert s[field] > 0 and s["failed_at"] is not None


class _RefusesTornFirstFormat(State):
    """Mutant: revision 1's behaviour, a device left by a cut first format is refused."""

    def __init__(self, dev):
        head = dev.read(0, 40)
        if head != b"\xff" * 40 and dev.read(40, 4) == b"\xff" * 4 and head[20:] == b"\xff" * 20:
            raise StoreError("not a State store")
        State.__init__(self, dev)


def test_sweep_catches_a_store_bricked_by_its_first_format(monkeypatch):
    monkeypatch.setattr(state_torture, "State", _RefusesTornFirstFormat)
    with pytest.raises(AssertionError, match="mount after a cut failed"):
        state_torture.sweep()


def test_meterctl_torture_state_entry_point():
    from meterctl import torture_state

    seen = []
    r = torture_state.run(120, seed=5, progress=seen.append, sweep_second=0)   # double cuts: tests above
    assert r["cuts"] == 120 and r["lost"] == 0 and r["corrupt"] == 0
    assert r["sweep_runs"] >= 150 and r["first_format_cuts"] >= 6 and r["failed_at"] is None
    assert r["seconds"] >= 0 and seen and seen[-1]["cuts"] <= 120
