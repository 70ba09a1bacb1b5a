"""The configuration keys of the address policy and discovery limits, and the demo's overlay."""

from __future__ import annotations

from pathlib import Path

import pytest

from settings import ConfigError, ConfigStore, load, permit_addresses


def write(conf: Path, main: str) -> Path:
    conf.mkdir(parents=True, exist_ok=True)
    (conf / "patch-manager.toml").write_text(main)
    return conf


def problems(conf: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load(conf)
    return [f"{p.key}: {p.reason}" for p in caught.value.problems]


def test_defaults_refuse_every_special_address_and_allow_two_scans(tmp_path: Path) -> None:
    config = load(tmp_path)
    assert config.agents.allow_addresses == ()
    assert config.agents.allow_ports == ()
    assert config.agents.resolve_timeout_s == 5.0
    assert config.discovery.max_concurrent_scans == 2


def test_address_keys_are_read(tmp_path: Path) -> None:
    conf = write(
        tmp_path,
        '[agents]\nallow_addresses = ["127.0.0.0/8", "10.1.2.3"]\nallow_ports = [13443]\n'
        "resolve_timeout_s = 1.5\n[discovery]\nmax_concurrent_scans = 4\nmin_prefix_len = 16\n",
    )
    config = load(conf)
    assert config.agents.allow_addresses == ("127.0.0.0/8", "10.1.2.3")
    assert config.agents.allow_ports == (13443,)
    assert config.agents.resolve_timeout_s == 1.5
    assert (config.discovery.max_concurrent_scans, config.discovery.min_prefix_len) == (4, 16)


def test_bad_address_keys_are_all_reported_together(tmp_path: Path) -> None:
    conf = write(
        tmp_path,
        '[agents]\nallow_addresses = ["10.0.0.0/8", "::1/128", "nonsense"]\n'
        "allow_ports = [0]\nresolve_timeout_s = 0\n"
        "[discovery]\nmax_concurrent_scans = 17\nmin_prefix_len = 15\n",
    )
    assert problems(conf) == [
        "agents.allow_ports: entry 0 must be at least 1 (got 0)",
        "agents.resolve_timeout_s: must be at least 0.1 (got 0)",
        "discovery.max_concurrent_scans: must be at most 16 (got 17)",
        "discovery.min_prefix_len: must be at least 16 (got 15)",
        "agents.allow_addresses: '::1/128' is not an IPv4 CIDR range",
        "agents.allow_addresses: 'nonsense' is not an IPv4 CIDR range",
    ]


def test_a_malformed_bind_is_reported_with_the_other_problems(tmp_path: Path) -> None:
    conf = write(tmp_path, '[server]\nbind = "8443"\n[polling]\nhealth_interval_s = 1\n')
    assert problems(conf) == [
        "polling.health_interval_s: must be at least 10 (got 1)",
        "server.bind: must be HOST:PORT, e.g. 127.0.0.1:8443",
    ]


@pytest.mark.parametrize("bind", ["bad host!:8443", "a..b:8443", "-x:1", "[::1:80"])
def test_a_bind_host_that_is_no_host_is_a_problem(tmp_path: Path, bind: str) -> None:
    conf = write(tmp_path, f'[server]\nbind = "{bind}"\n')
    assert len(problems(conf)) == 1


@pytest.mark.parametrize("bind", ["0.0.0.0:8443", "[::]:8443", "manager.example.com:443"])
def test_ordinary_bind_hosts_are_accepted(tmp_path: Path, bind: str) -> None:
    conf = write(tmp_path, f'[server]\nbind = "{bind}"\n')
    assert load(conf).server.bind == bind


def test_permit_addresses_adds_what_is_missing_only(tmp_path: Path) -> None:
    conf = write(tmp_path, '[agents]\nallow_addresses = ["10.0.0.0/8"]\n')
    config = permit_addresses(load(conf), ["127.0.0.0/8", "10.0.0.0/8"])
    assert config.agents.allow_addresses == ("10.0.0.0/8", "127.0.0.0/8")


def test_the_store_overlay_survives_a_reload(tmp_path: Path) -> None:
    conf = write(tmp_path, "")
    store = ConfigStore(conf, overlay=lambda c: permit_addresses(c, ["127.0.0.0/8"]))
    assert store.current.agents.allow_addresses == ("127.0.0.0/8",)
    write(conf, "[agents]\nport = 13443\n")
    assert store.reload()
    assert store.current.agents.port == 13443
    assert store.current.agents.allow_addresses == ("127.0.0.0/8",)
