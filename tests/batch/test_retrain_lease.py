"""The retrain lease on a real Delta table: one holder at a time, even when claims race."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone

import pytest

from learnscore.batch.retrain_lease import LeaseLost, RetrainLease


@pytest.fixture
def lake_config(base_config, tmp_path):
    return base_config.model_copy(update={"lake": base_config.lake.model_copy(update={
        "root": str(tmp_path / "lake"), "checkpoints": str(tmp_path / "checkpoints")})})


def test_a_second_worker_waits_until_the_first_releases(lake_config):
    first, second = RetrainLease(lake_config), RetrainLease(lake_config)
    assert first.try_acquire() is None  # taken
    holder = second.try_acquire()
    assert holder is not None and holder.holder == first.holder and not holder.released
    assert first.renew() and first.try_acquire() is None  # the holder keeps it
    first.release()
    assert second.try_acquire() is None
    assert first.try_acquire().holder == second.holder


def test_a_lease_not_renewed_within_its_ttl_is_taken_over(lake_config):
    now = [datetime(2026, 12, 1, tzinfo=timezone.utc)]
    # A holder on another host (its pid cannot be checked from here): only the ttl frees it.
    gone = RetrainLease(lake_config, ttl_seconds=60, clock=lambda: now[0])
    gone.try_acquire()
    table, row = gone._read()
    assert gone._swap(table, row.__class__(**{**row.__dict__, "host": "elsewhere"}))
    waiting = RetrainLease(lake_config, ttl_seconds=60, clock=lambda: now[0])
    now[0] += timedelta(seconds=59)
    assert waiting.try_acquire() is not None
    now[0] += timedelta(seconds=2)
    assert waiting.try_acquire() is None
    assert not gone.renew() and gone.lost  # the old holder learns it lost the lease


def test_every_claim_takes_a_new_fencing_token_and_a_fenced_holder_is_stopped(lake_config):
    first, second = RetrainLease(lake_config, ttl_seconds=60), RetrainLease(lake_config, ttl_seconds=60)
    assert first.try_acquire() is None and first.token == 1
    assert first.renew() and first.try_acquire() is None and first.token == 1  # its own: same token
    first.fence("writing")  # still the holder: passes
    table, row = first._read()
    # The holder stalls past its ttl; the other worker takes the lease over.
    assert first._swap(table, row.__class__(**{**row.__dict__, "host": "elsewhere",
                                                "expires_at": row.acquired_at}))
    assert second.try_acquire() is None and second.token == 2
    with pytest.raises(LeaseLost, match=r"not promoting version 3: this worker's retrain lease \(token 1\)"):
        first.fence("promoting version 3")
    assert first.lost and not first.renew()
    first.release()  # a fenced worker's release leaves the holder's lease alone
    assert first.try_acquire().holder == second.holder
    second.release()
    assert first.try_acquire() is None and first.token == 3  # a claim after a release: a new token


def test_racing_claims_have_exactly_one_winner(lake_config):
    RetrainLease(lake_config).release()  # the table exists before the race
    leases = [RetrainLease(lake_config) for _ in range(6)]
    start = threading.Barrier(len(leases))
    outcome: dict[str, object] = {}

    def claim(lease):
        start.wait()
        outcome[lease.holder] = lease.try_acquire()

    threads = [threading.Thread(target=claim, args=(lease,)) for lease in leases]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = [holder for holder, blocker in outcome.items() if blocker is None]
    assert len(winners) == 1
    assert {blocker.holder for blocker in outcome.values() if blocker is not None} == set(winners)


def test_held_renews_and_releases_and_a_stop_ends_the_wait(lake_config):
    holder, other = RetrainLease(lake_config, ttl_seconds=0.4), RetrainLease(lake_config, ttl_seconds=0.4)
    stop = threading.Event()
    with holder.held() as got:
        assert got
        threading.Event().wait(1.0)  # longer than the ttl: renewed meanwhile
        assert other.try_acquire() is not None
        threading.Timer(0.3, stop.set).start()
        with other.held(stop) as other_got:
            assert other_got is False
    assert other.try_acquire() is None  # released on leaving the block
