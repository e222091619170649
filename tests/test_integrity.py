"""Trust nothing around the gateway (issue 11), against a real redis-server: the
follower verifies what the loader signed, refuses forged, corrupted or junk
data while it keeps deciding from the last good index, never stops following
whatever Redis holds, takes a new dataset epoch after FLUSHALL, and a second
concurrent load is refused."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc
import numpy as np
import pytest
import redis
import redis.asyncio as aioredis
from grpc_health.v1 import health_pb2, health_pb2_grpc

import loader.publish
from contract.changes import encode_arrays, index_version
from contract.domain import Status
from contract.errors import SignatureError, SnapshotError, StalePublishError
from contract.reads import current_snapshot_plan, run
from contract.signing import Signer, Verifier, generate_keypair
from contract.snapshot import ARRAY_DTYPES, Keys, validate_arrays
from gateway.feed import SnapshotFollower
from gateway.index import IndexHolder
from gateway.server import DATA_HEALTH_NAME
from loader.changes import publish_change
from loader.publish import publish_snapshot
from tests.factory import Person, build_arrays
from tests.gateway_process import ROOT, GatewayProcess
from tests.test_feed import DOCTORS, active, status_of, suspended, until

POLL_S = 0.05


@pytest.fixture(scope="module")
def keypair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Signer, Verifier]:
    private, public = generate_keypair(tmp_path_factory.mktemp("keys"))
    return Signer.from_file(private), Verifier.from_files([public])


def follow(
    url: str,
    prefix: str,
    verifier: Verifier | None,
    body: Callable[[SnapshotFollower], Awaitable[None]],
) -> SnapshotFollower:
    async def main() -> SnapshotFollower:
        client = aioredis.Redis.from_url(url, socket_connect_timeout=0.5)
        follower = SnapshotFollower(
            client,
            Keys(prefix),
            IndexHolder(),
            poll_interval_s=POLL_S,
            max_backoff_s=0.2,
            verifier=verifier,
        )
        task = asyncio.create_task(follower.run())
        try:
            await body(follower)
            assert not task.done(), "the follower task ended"
        finally:
            task.cancel()
            await asyncio.wait_for(asyncio.gather(task, return_exceptions=True), 10)
            await client.aclose()
        return follower

    return asyncio.run(main())


def people() -> list[Person]:
    return [active(code) for code in DOCTORS]


def test_signed_data_is_served_and_verifies(
    redis_url: str, redis_client: redis.Redis, prefix: str, keypair: tuple[Signer, Verifier]
) -> None:
    signer, verifier = keypair
    keys = Keys(prefix)
    version = publish_snapshot(redis_client, keys, build_arrays(people()), signer=signer).version

    async def body(follower: SnapshotFollower) -> None:
        await until(lambda: follower.holder.current is not None, "the first load")
        change = build_arrays([suspended(DOCTORS[0])])
        await asyncio.to_thread(publish_change, redis_client, keys, change, signer=signer)
        await until(lambda: follower.holder.version == index_version(version, 1), "the change")
        assert status_of(follower.holder, DOCTORS[0]) == Status.SUSPENDED
        assert follower.follower_up

    follow(redis_url, prefix, verifier, body)


def test_unsigned_or_foreign_snapshots_are_refused(
    redis_client: redis.Redis, prefix: str, keypair: tuple[Signer, Verifier], tmp_path: Path
) -> None:
    _, verifier = keypair
    keys = Keys(prefix)
    publish_snapshot(redis_client, keys, build_arrays(people()))
    with pytest.raises(SignatureError, match="not signed"):
        read_snapshot_verified(redis_client, keys, verifier)
    other, _ = generate_keypair(tmp_path)
    publish_snapshot(redis_client, keys, build_arrays(people()), signer=Signer.from_file(other))
    with pytest.raises(SignatureError, match="not trusted"):
        read_snapshot_verified(redis_client, keys, verifier)


def read_snapshot_verified(client: redis.Redis, keys: Keys, verifier: Verifier) -> object:
    return run(client, current_snapshot_plan(keys, verifier))


def test_a_forged_change_entry_is_refused_and_the_real_one_still_applies(
    redis_url: str, redis_client: redis.Redis, prefix: str, keypair: tuple[Signer, Verifier]
) -> None:
    signer, verifier = keypair
    keys = Keys(prefix)
    people_ = people()
    people_[1] = suspended(DOCTORS[1])
    version = publish_snapshot(redis_client, keys, build_arrays(people_), signer=signer).version

    async def body(follower: SnapshotFollower) -> None:
        await until(lambda: follower.holder.current is not None, "the first load")
        epoch = redis_client.get(keys.epoch)
        assert isinstance(epoch, bytes)
        # What a gateway's own Redis user can do (+xadd): a well-formed change
        # with the next sequence number that un-suspends DOCTORS[1].
        forged: dict[str, str | bytes] = {
            "kind": "change",
            "base": str(version),
            "seq": "1",
            "epoch": epoch,
            "published_at_ns": "1",
            **encode_arrays(build_arrays([active(DOCTORS[1])])),
        }
        redis_client.xadd(keys.changes, forged)  # type: ignore[arg-type]
        await until(lambda: follower.rejected["change"] == 1, "the forgery refused")
        assert status_of(follower.holder, DOCTORS[1]) == Status.SUSPENDED
        assert follower.holder.version == index_version(version, 0)
        # The loader's real change 1 (same number the forgery took) applies.
        change = build_arrays([suspended(DOCTORS[2])])
        await asyncio.to_thread(publish_change, redis_client, keys, change, signer=signer)
        await until(lambda: follower.holder.version == index_version(version, 1), "change 1")
        assert status_of(follower.holder, DOCTORS[2]) == Status.SUSPENDED
        assert status_of(follower.holder, DOCTORS[1]) == Status.SUSPENDED

    follow(redis_url, prefix, verifier, body)


@pytest.mark.parametrize("array", ["st_status", "st_until", "reg_from", "reg_until", "pt_points"])
def test_a_corrupted_array_of_the_right_length_is_refused_and_the_last_good_index_kept(
    redis_url: str,
    redis_client: redis.Redis,
    prefix: str,
    keypair: tuple[Signer, Verifier],
    array: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    signer, verifier = keypair
    keys = Keys(prefix)
    people_ = people()
    people_[0] = suspended(DOCTORS[0])
    people_[0].points = [("2025-01-10", 6), ("2025-02-01", 9)]
    first = publish_snapshot(redis_client, keys, build_arrays(people_), signer=signer).version
    real_flip = loader.publish._flip

    def corrupting_flip(client: redis.Redis, keys: Keys, version: int, *rest: object) -> object:
        # Random bytes of the right length over one array, before the flip.
        chunk = keys.chunk(version, array, 0)
        raw = client.get(chunk)
        assert isinstance(raw, bytes)
        noise = np.random.default_rng(7).integers(0, 256, len(raw), dtype=np.uint8).tobytes()
        client.set(chunk, noise)
        return real_flip(client, keys, version, *rest)  # type: ignore[arg-type]

    async def body(follower: SnapshotFollower) -> None:
        await until(lambda: follower.holder.current is not None, "the first load")
        monkeypatch.setattr("loader.publish._flip", corrupting_flip)
        await asyncio.to_thread(
            publish_snapshot, redis_client, keys, build_arrays(people_), signer=signer
        )
        await until(lambda: follower.rejected["snapshot"] >= 1, "the corrupted snapshot refused")
        assert follower.holder.version == index_version(first, 0)
        assert status_of(follower.holder, DOCTORS[0]) == Status.SUSPENDED
        refused = follower.rejected["snapshot"]
        await asyncio.sleep(1.0)
        # Remembered by its manifest: not downloaded again and again.
        assert follower.rejected["snapshot"] == refused

    follower = follow(redis_url, prefix, verifier, body)
    assert follower.errors["data"] >= 1

    async def fresh(follower: SnapshotFollower) -> None:
        # A gateway that starts now: the current version is unusable, the
        # previous one is still kept and verifies.
        await until(lambda: follower.holder.current is not None, "a start from the previous one")
        assert follower.holder.version == index_version(first, 0)

    follow(redis_url, prefix, verifier, fresh)


def test_garbage_in_redis_never_stops_the_follower(
    redis_url: str, redis_client: redis.Redis, prefix: str, keypair: tuple[Signer, Verifier]
) -> None:
    signer, verifier = keypair
    keys = Keys(prefix)
    version = publish_snapshot(redis_client, keys, build_arrays(people()), signer=signer).version

    async def body(follower: SnapshotFollower) -> None:
        await until(lambda: follower.holder.current is not None, "the first load")
        redis_client.set(keys.current, "abc")
        await until(lambda: follower.errors["data"] >= 1, "the bad pointer noticed")
        assert not follower.follower_up and follower.last_error
        redis_client.set(keys.current, str(version))
        junks: list[dict[str | bytes, str | bytes]] = [
            {"kind": "change", "version": "NaN"},
            {"kind": "change", "base": "x", "seq": "1"},
            {"kind": "snapshot", "version": "-1"},
            {"kind": "??"},
        ]
        for junk in junks:
            redis_client.xadd(keys.changes, junk)  # type: ignore[arg-type]
        await until(lambda: follower.rejected["change"] >= 4, "the junk entries refused")
        change = build_arrays([suspended(DOCTORS[3])])
        await asyncio.to_thread(publish_change, redis_client, keys, change, signer=signer)
        await until(lambda: follower.holder.version == index_version(version, 1), "the change")
        assert follower.follower_up

    follow(redis_url, prefix, verifier, body)


def test_after_flushall_a_new_epoch_is_taken_although_its_version_is_lower(
    redis_url: str, redis_client: redis.Redis, prefix: str, keypair: tuple[Signer, Verifier]
) -> None:
    signer, verifier = keypair
    keys = Keys(prefix)
    for _ in range(3):
        publish_snapshot(redis_client, keys, build_arrays(people()), signer=signer)

    async def body(follower: SnapshotFollower) -> None:
        await until(lambda: follower.holder.version == index_version(3, 0), "version 3")
        old_epoch = follower.held_epoch
        for key in redis_client.scan_iter(match=f"{prefix}:*"):
            redis_client.delete(key)  # FLUSHALL, for this prefix only
        people_ = people()
        people_[4] = suspended(DOCTORS[4])
        new = publish_snapshot(redis_client, keys, build_arrays(people_), signer=signer)
        assert new.version == 1
        await until(
            lambda: status_of(follower.holder, DOCTORS[4]) == Status.SUSPENDED,
            "the new dataset served",
            timeout_s=5.0,
        )
        assert follower.held_epoch != old_epoch
        assert follower.epoch_changes == 1

    follow(redis_url, prefix, verifier, body)


def test_a_load_that_lost_the_race_is_refused_and_leaves_nothing(
    redis_client: redis.Redis, prefix: str
) -> None:
    keys = Keys(prefix)
    first = publish_snapshot(redis_client, keys, build_arrays(people())).version
    # Two loads both read version `first` at their start; one publishes first.
    winner = publish_snapshot(redis_client, keys, build_arrays(people()), expect_current=first)
    with pytest.raises(StalePublishError, match="another load ran at the same time"):
        publish_snapshot(redis_client, keys, build_arrays(people()), expect_current=first)
    assert int(redis_client.get(keys.current) or 0) == winner.version
    versions = {
        keys.version_of(k.decode()) for k in redis_client.scan_iter(match=f"{prefix}:snapshot:*")
    }
    assert versions - {None} == {first, winner.version}


def test_every_invariant_the_index_relies_on_is_checked() -> None:
    good = build_arrays([suspended(DOCTORS[0]), active(DOCTORS[1])])
    validate_arrays(good)
    for name, value in (
        ("st_status", 34),
        ("st_status", 0),
        ("reg_from", 0xFFFF),
        ("prac_codes", 5),
    ):
        bad = {k: v.copy() for k, v in good.items()}
        bad[name][0] = value
        with pytest.raises(SnapshotError):
            validate_arrays(bad)
    bad = {k: v.copy() for k, v in good.items()}
    bad["reg_until"][0] = bad["reg_from"][0]  # ends the day it starts
    with pytest.raises(SnapshotError, match="reg_until"):
        validate_arrays(bad)
    assert set(ARRAY_DTYPES) == set(good)


def service_health(address: str, service: str) -> int:
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        request = health_pb2.HealthCheckRequest(service=service)
        return int(stub.Check(request, timeout=2).status)


@pytest.mark.slow
def test_the_real_gateway_refuses_to_start_without_a_key_and_reports_data_health(
    redis_url: str, redis_client: redis.Redis, prefix: str, tmp_path: Path
) -> None:
    """No trusted key: refused at start. With one: the data's health entry goes
    NOT_SERVING while the follower fails, and SERVING again once it recovers,
    while claims are decided throughout (fail-static)."""
    proc = subprocess.run(
        [sys.executable, "-m", "gateway", "--redis-url", redis_url, "--prefix", prefix,
         "--port", "0"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 1 and "trusted_keys" in proc.stderr
    private, public = generate_keypair(tmp_path / "keys")
    keys = Keys(prefix)
    version = publish_snapshot(
        redis_client, keys, build_arrays(people()), signer=Signer.from_file(private)
    ).version
    serving = health_pb2.HealthCheckResponse.SERVING
    with GatewayProcess(redis_url, prefix, "--trusted-keys", str(public)) as gateway:
        wait = time.monotonic() + 10
        while service_health(gateway.address, DATA_HEALTH_NAME) != serving:
            assert time.monotonic() < wait, "data health never SERVING"
            time.sleep(0.1)
        redis_client.set(keys.current, "abc")
        wait = time.monotonic() + 15
        while service_health(gateway.address, DATA_HEALTH_NAME) == serving:
            assert time.monotonic() < wait, "data health stayed SERVING with a bad pointer"
            time.sleep(0.1)
        assert gateway.health() == serving  # still deciding from the held index
        redis_client.set(keys.current, str(version))
        wait = time.monotonic() + 15
        while service_health(gateway.address, DATA_HEALTH_NAME) != serving:
            assert time.monotonic() < wait, "data health did not recover"
            time.sleep(0.1)
        assert "following Redis failed" in gateway.log()
