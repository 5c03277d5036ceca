import subprocess
import sys
from pathlib import Path

import pytest

from services.common.config import ConfigError, env_choice, env_float, env_int, env_url

REPO = Path(__file__).resolve().parents[2]


def test_defaults_apply_when_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("X_INT", raising=False)
    assert env_int("X_INT", 7) == 7
    monkeypatch.setenv("X_INT", "  ")
    assert env_int("X_INT", 7) == 7


@pytest.mark.parametrize("reader, value, message", [
    (lambda: env_int("X", 1, minimum=1), "abc", "not an integer"),
    (lambda: env_int("X", 1, minimum=1), "0", "at least 1"),
    (lambda: env_int("X", 1, maximum=5), "6", "at most 5"),
    (lambda: env_float("X", 1.0), "nan", "finite"),
    (lambda: env_choice("X", "a", ("a", "b")), "c", "one of: a, b"),
    (lambda: env_url("X", "http://x"), "ftp://x", "http"),
    (lambda: env_url("X", "http://x"), "https://x:8080", "http://host"),
    (lambda: env_url("X", "http://x"), "http://x:99999", "invalid port"),
])
def test_bad_values_name_the_variable(monkeypatch: pytest.MonkeyPatch, reader, value: str, message: str) -> None:
    monkeypatch.setenv("X", value)
    with pytest.raises(ConfigError, match=message) as caught:
        reader()
    assert "X=" in str(caught.value)


@pytest.mark.parametrize("module, env", [
    ("services.consumer", {"ROUTING_STRATEGY": "random"}),
    ("services.consumer", {"CONSUMER_JOB_TIMEOUT_MS": "1000"}),
    ("services.api", {"API_ACK_MODE": "maybe"}),
    ("services.cache", {"CACHE_LEASE_MS": "-1"}),
    ("services.api", {"API_LISTEN": "127.0.0.1:70000"}),
    ("services.api", {"API_LISTEN": "127.0.0.1:65535"}),  # the payments lane would be on 65536
    ("services.api", {"GC_GEN0_THRESHOLD": "10"}),
    ("services.cache", {"EVENT_LOOP": "trio"}),
    ("services.consumer", {"CPU_POLICY": "fifo"}),
    ("services.consumer", {"CPU_SLICE_US": "-5"}),
    ("services.cache", {"LOG_LEVEL": "chatty"}),
    ("services.cache", {"CACHE_STORE": "postgres"}),
    ("services.cache", {"CACHE_RETENTION_S": "59"}),
    ("services.cache", {"CACHE_RETENTION_S": "1d"}),
    ("services.cache", {"REDIS_URL": "unix://relative/redis.sock", "CACHE_STORE": "redis"}),
    ("services.cache", {"REDIS_URL": "redis://host:99999/0", "CACHE_STORE": "redis"}),
    ("services.cache", {"REDIS_URL": "redis://host:6379/zero", "CACHE_STORE": "redis"}),
    ("services.cache", {"REDIS_URL": "http://host:6379", "CACHE_STORE": "redis"}),
    ("services.consumer", {"CONSUMER_HEARTBEAT_TTL_MS": "100"}),
])
def test_services_refuse_to_start_with_a_bad_value(module: str, env: dict[str, str]) -> None:
    result = subprocess.run([sys.executable, "-m", module], cwd=REPO, env={"PATH": "/usr/bin:/bin", **env},
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "configuration error" in result.stderr
    assert list(env)[0] in result.stderr or "API_PAYMENTS_LISTEN" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("url", ["unix:///run/redis/redis.sock", "redis://redis:6379/0", "redis://10.0.0.5",
                                 "redis://redis:6379"])
def test_redis_urls_that_are_accepted(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    from services.cache.__main__ import CacheSettings

    monkeypatch.setenv("CACHE_STORE", "redis")
    monkeypatch.setenv("REDIS_URL", url)
    assert CacheSettings.from_env().redis_url == url


def test_redis_url_is_not_read_by_a_memory_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    from services.cache.__main__ import CacheSettings

    monkeypatch.delenv("CACHE_STORE", raising=False)
    monkeypatch.setenv("REDIS_URL", "nonsense")
    assert CacheSettings.from_env().store == "memory"


def test_the_retention_defaults_to_a_day_and_reaches_both_stores(monkeypatch: pytest.MonkeyPatch) -> None:
    from services.cache.__main__ import CacheSettings, make_store
    from services.cache.memory import MemoryStore
    from services.cache.redis_store import RedisStore

    monkeypatch.delenv("CACHE_RETENTION_S", raising=False)
    monkeypatch.setenv("CACHE_JOURNAL", "off")
    settings = CacheSettings.from_env()
    assert settings.retention_ms == 86_400_000
    monkeypatch.setenv("CACHE_RETENTION_S", "60")
    settings = CacheSettings.from_env()
    assert settings.retention_ms == 60_000
    memory = make_store(settings)
    assert isinstance(memory, MemoryStore) and memory.state.retention_ms == 60_000
    monkeypatch.setenv("CACHE_STORE", "redis")
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")
    redis = make_store(CacheSettings.from_env())
    assert isinstance(redis, RedisStore) and redis.retention_ms == 60_000
