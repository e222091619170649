"""Shared fixtures: a private redis-server for the whole session (never the
machine's own on 6379), and a fresh key prefix per test instead of flushing."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator

import pytest
import redis
from hypothesis import settings

from gateway.ops.redis_process import RedisProcess

_prefixes = itertools.count()

# CI runs the same examples every time, so a submission's verdict does not
# depend on the draw; local runs keep exploring new ones.
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisProcess]:
    with RedisProcess() as server:
        yield server


@pytest.fixture(scope="session")
def redis_url(redis_server: RedisProcess) -> str:
    return redis_server.url


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def prefix(request: pytest.FixtureRequest) -> str:
    """A key prefix no other test uses."""
    return f"t{next(_prefixes)}-{request.node.name[:40].replace('[', '-').replace(']', '')}"
