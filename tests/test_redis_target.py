"""contract.redis_target: the settings that say where Redis is, and redis-py's
Sentinel clients through a real failover (a primary, a replica and three
Sentinels on loopback ports: tests/cluster.py)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis

from contract.redis_target import (
    RedisTarget,
    masked_url,
    online_replicas,
    parse_sentinels,
    redis_target,
)
from tests.cluster import Cluster


def test_a_url_is_one_redis() -> None:
    target = redis_target("redis://127.0.0.1:6390/0", None, None)
    assert target == RedisTarget(url="redis://127.0.0.1:6390/0")
    assert not target.uses_sentinel
    assert redis_target(None, None, None) is None
    assert redis_target("", " ", "") is None


def test_a_sentinel_list_with_default_ports_and_ipv6() -> None:
    target = redis_target(None, "10.0.0.1:26380, sentinel-b,[::1]:26381", "elig")
    assert target is not None and target.uses_sentinel
    assert target.sentinels == (("10.0.0.1", 26380), ("sentinel-b", 26379), ("::1", 26381))
    assert target.master_name == "elig"
    assert target.node_options == {} and target.sentinel_options == {}
    assert (
        target.describe()
        == "Sentinel master 'elig' via 10.0.0.1:26380,sentinel-b:26379,[::1]:26381"
    )


def test_credentials_and_tls_reach_the_nodes_and_the_sentinels() -> None:
    spec = (
        "rediss://gateway:s3cret@s1:26379,s2:26379/2"
        "?ssl_ca_certs=/etc/elig/redis-ca.crt&ssl_cert_reqs=required"
    )
    sentinels, node, sentinel = parse_sentinels(spec)
    assert sentinels == (("s1", 26379), ("s2", 26379))
    assert node == {
        "username": "gateway",
        "password": "s3cret",
        "db": 2,
        "ssl": True,
        "ssl_ca_certs": "/etc/elig/redis-ca.crt",
        "ssl_cert_reqs": "required",
    }
    assert sentinel == {k: v for k, v in node.items() if k != "db"}  # no database on a Sentinel


def test_sentinels_may_have_their_own_credentials_or_none() -> None:
    own = "redis://gateway:s3cret@s1:26379?sentinel_username=watch&sentinel_password=pw"
    _, node, sentinel = parse_sentinels(own)
    assert (node["username"], node["password"]) == ("gateway", "s3cret")
    assert (sentinel["username"], sentinel["password"]) == ("watch", "pw")
    _, node, sentinel = parse_sentinels("redis://gateway:s3cret@s1:26379?sentinel_password=")
    assert node["password"] == "s3cret"
    assert "password" not in sentinel and "username" not in sentinel


@pytest.mark.parametrize(
    ("url", "sentinel", "name", "message"),
    [
        ("redis://r:6379/0", "s:26379", "elig", "--redis-url .* or --redis-sentinel .*not both"),
        (None, "s:26379", None, "needs --redis-master-name"),
        (None, None, "elig", "only used with --redis-sentinel"),
        (None, "s:http", "elig", "'http' is not a TCP port"),
        (None, "s:70000", "elig", "not a TCP port"),
        (None, ",", "elig", "no host:port"),
        (None, "http://s:26379", "elig", "scheme 'http'"),
        ("redis.example:6379", None, None, "not a redis://"),
    ],
)
def test_what_cannot_work_is_refused_naming_the_flag(
    url: str | None, sentinel: str | None, name: str | None, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        redis_target(url, sentinel, name)


def test_passwords_never_show() -> None:
    assert masked_url("redis://app:s3cret@db:6379/0") == "redis://app:***@db:6379/0"
    assert "s3cret" not in masked_url("redis://db:6379/0?password=s3cret")
    with pytest.raises(ValueError) as excinfo:
        redis_target(None, "redis://app:s3cret@", "elig")
    assert "s3cret" not in str(excinfo.value)


def test_online_replicas_counts_only_replicas_in_sync() -> None:
    info = {
        "role": "master",
        "connected_slaves": 2,
        "slave0": {"ip": "10.0.0.2", "port": 6379, "state": "online"},
        "slave1": {"ip": "10.0.0.3", "port": 6379, "state": "wait_bgsave"},
    }
    assert online_replicas(info) == 1
    assert online_replicas({"role": "master", "connected_slaves": 0}) == 0


def _port_of(client: redis.Redis) -> int:
    return int(client.info("server")["tcp_port"])


async def _async_port_of(client: aioredis.Redis) -> int:
    return int((await client.info("server"))["tcp_port"])


def _until(what: str, attempt: object, timeout_s: float = 15.0) -> None:
    """Call ``attempt`` until it does not raise a Redis error (a failover in progress)."""
    assert callable(attempt)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            attempt()
            return
        except redis.RedisError:
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: still failing after {timeout_s} s") from None
            time.sleep(0.05)


@pytest.mark.slow
def test_sentinel_clients_follow_a_failover_and_fall_back_to_the_primary(
    tmp_path: Path,
) -> None:
    """redis-py's own Sentinel pools, as we build them: the primary client writes to the
    promoted replica after the primary is SIGKILLed (re-discovered on the next
    connection), and the replica client reads from the primary when no replica is left;
    sync and asyncio alike, and closing a client closes its Sentinel connections."""
    with Cluster(tmp_path / "cluster") as cluster:
        target = redis_target(None, cluster.sentinel_spec, cluster.master_name)
        assert target is not None
        primary, replica = cluster.node_ports
        writer = target.client(socket_timeout=5)
        reader = target.client(replica=True, socket_timeout=5)

        async def async_clients() -> tuple[aioredis.Redis, aioredis.Redis]:
            return target.async_clients("replicas", socket_timeout=5)

        try:
            writer.set("k", "1")
            assert writer.execute_command("WAIT", 1, 2000) == 1  # type: ignore[no-untyped-call]
            assert (_port_of(writer), _port_of(reader)) == (primary, replica)
            assert reader.get("k") == b"1"

            async def before() -> None:
                a_writer, a_reader = await async_clients()
                try:
                    assert await _async_port_of(a_writer) == primary
                    assert await _async_port_of(a_reader) == replica
                finally:
                    await a_writer.aclose()  # closes a_reader and the Sentinel connections

            asyncio.run(before())

            cluster.kill_node(primary)
            promoted, _ = cluster.wait_promotion(primary)
            assert promoted == replica
            _until("a write after the failover", lambda: writer.set("k", "2"))
            assert _port_of(writer) == replica
            # No replica is left: the replica client reads from the primary.
            _until("a read after the failover", lambda: reader.get("k"))
            assert reader.get("k") == b"2"
            assert _port_of(reader) == replica

            async def after() -> None:
                a_writer, a_reader = await async_clients()
                try:
                    await a_writer.set("k", "3")
                    assert await a_reader.get("k") == b"3"
                    assert await _async_port_of(a_reader) == replica
                finally:
                    await a_writer.aclose()

            asyncio.run(after())
        finally:
            writer.close()
            reader.close()
