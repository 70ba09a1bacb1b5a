from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from settings import SECTIONS, ConfigError, effective_policy, load
from settings.model import (
    AgentSettings,
    AuthSettings,
    ComplianceSettings,
    DatabaseSettings,
    DiscoverySettings,
    LoggingSettings,
    PkiSettings,
    PollingPolicy,
    RetentionSettings,
    ServerSettings,
    SupervisionSettings,
)

REPO = Path(__file__).resolve().parents[2]


def write(conf: Path, main: str = "", hosts: str = "") -> Path:
    conf.mkdir(parents=True, exist_ok=True)
    (conf / "patch-manager.toml").write_text(main)
    (conf / "hosts.toml").write_text(hosts)
    return conf


def test_committed_files_are_valid_and_equal_defaults() -> None:
    config = load(REPO / "conf")
    assert config.polling.health_interval_s == 300
    assert config.polling.patch_interval_s == 1800
    assert config.polling.backoff_s == (60, 300, 1800)
    assert config.server.tls is True


def test_missing_files_mean_defaults(tmp_path: Path) -> None:
    config = load(tmp_path / "nothing-here")
    assert config.database.url == ""
    assert config.discovery.min_prefix_len == 20


def test_precedence_default_global_group_host(tmp_path: Path) -> None:
    conf = write(
        tmp_path,
        main="[polling]\nhealth_interval_s = 120\npatch_interval_s = 900\n",
        hosts=(
            "[groups.web]\npatch_interval_s = 600\njitter_ratio = 0.2\n"
            "[groups.zz]\njitter_ratio = 0.3\n"
            '[hosts."web01.example.com"]\nhealth_interval_s = 30\n'
        ),
    )
    config = load(conf)
    eff = effective_policy(config, "web01.example.com", ["zz", "web"])
    assert eff.policy.health_interval_s == 30
    assert eff.origins["health_interval_s"] == "host"
    assert eff.policy.patch_interval_s == 600
    assert eff.origins["patch_interval_s"] == "group:web"
    # Groups apply in name order: "zz" after "web".
    assert eff.policy.jitter_ratio == 0.3
    assert eff.origins["jitter_ratio"] == "group:zz"
    assert eff.policy.request_timeout_s == 30.0
    assert eff.origins["request_timeout_s"] == "default"

    other = effective_policy(config, "db01", [])
    assert other.policy.health_interval_s == 120
    assert other.origins["health_interval_s"] == "global"
    assert other.policy.patch_interval_s == 900


def test_range_checks_name_file_and_key(tmp_path: Path) -> None:
    conf = write(tmp_path, main="[polling]\nhealth_interval_s = 5\n")
    with pytest.raises(ConfigError) as info:
        load(conf)
    [problem] = info.value.problems
    assert problem.file.endswith("patch-manager.toml")
    assert problem.key == "polling.health_interval_s"
    assert "at least 10" in problem.reason


def test_unknown_keys_are_errors(tmp_path: Path) -> None:
    conf = write(tmp_path, main="[server]\nbindd = 'x'\n[bogus]\na = 1\n")
    with pytest.raises(ConfigError) as info:
        load(conf)
    keys = {p.key for p in info.value.problems}
    assert keys == {"server.bindd", "bogus"}


def test_all_errors_reported_together(tmp_path: Path) -> None:
    conf = write(
        tmp_path,
        main='[polling]\nbackoff_s = [60, 0]\npaused = "yes"\n[database]\npool_size = 0\n',
        hosts='[groups.web]\nhealth_interval_s = "fast"\n[hosts."a.example"]\nnope = 1\n',
    )
    with pytest.raises(ConfigError) as info:
        load(conf)
    found = {(Path(p.file).name, p.key) for p in info.value.problems}
    assert found == {
        ("patch-manager.toml", "polling.backoff_s"),
        ("patch-manager.toml", "polling.paused"),
        ("patch-manager.toml", "database.pool_size"),
        ("hosts.toml", "groups.web.health_interval_s"),
        ("hosts.toml", 'hosts."a.example".nope'),
    }
    assert "5 configuration problem(s)" in str(info.value)


def test_invalid_toml_names_the_file(tmp_path: Path) -> None:
    conf = write(tmp_path, main="[server\n")
    with pytest.raises(ConfigError) as info:
        load(conf)
    assert "not valid TOML" in str(info.value)
    assert "patch-manager.toml" in str(info.value)


def test_cross_checks(tmp_path: Path) -> None:
    conf = write(
        tmp_path,
        main=(
            '[server]\nbind = "nohostport"\nip_addresses = ["not-an-ip"]\n'
            "[supervision]\nrestart_min_s = 10.0\nrestart_max_s = 1.0\n"
            '[database]\nbinaries = "system"\n'
        ),
    )
    with pytest.raises(ConfigError) as info:
        load(conf)
    keys = {p.key for p in info.value.problems}
    assert keys == {
        "server.bind",
        "server.ip_addresses",
        "supervision.restart_min_s",
        "database.system_bin_dir",
    }


def test_settings_records_mirror_the_schema() -> None:
    records = {
        "server": ServerSettings,
        "database": DatabaseSettings,
        "logging": LoggingSettings,
        "agents": AgentSettings,
        "polling": PollingPolicy,
        "supervision": SupervisionSettings,
        "discovery": DiscoverySettings,
        "retention": RetentionSettings,
        "compliance": ComplianceSettings,
        "auth": AuthSettings,
        "pki": PkiSettings,
    }
    assert set(records) == set(SECTIONS)
    for section, cls in records.items():
        names = [f.name for f in dataclasses.fields(cls)]
        assert names == [k.name for k in SECTIONS[section]], section


def test_readme_reference_matches_the_schema() -> None:
    """Every key in the README's configuration reference exists, and every key is documented."""
    readme = (REPO / "README.md").read_text()
    documented = set(re.findall(r"^\| `([a-z_]+\.[a-z_]+)` \|", readme, flags=re.M))
    expected = {f"{section}.{key.name}" for section, keys in SECTIONS.items() for key in keys}
    assert documented == expected


def test_committed_config_mentions_every_key() -> None:
    text = (REPO / "conf" / "patch-manager.toml").read_text()
    for section, keys in SECTIONS.items():
        assert f"[{section}]" in text
        for key in keys:
            assert re.search(rf"^# {key.name} = ", text, flags=re.M), f"{section}.{key.name}"


def test_every_bad_entry_of_a_list_is_reported(tmp_path: Path) -> None:
    conf = write(
        tmp_path,
        '[agents]\nallow_ports = [70000, 0, "x", 12443]\n[polling]\nbackoff_s = [-1, "a", 5]\n',
    )
    with pytest.raises(ConfigError) as info:
        load(conf)
    reasons = {p.key: p.reason for p in info.value.problems}
    assert set(reasons) == {"agents.allow_ports", "polling.backoff_s"}
    for entry in ("entry 0", "entry 1", "entry 2"):
        assert entry in reasons["agents.allow_ports"]
    assert "entry 3" not in reasons["agents.allow_ports"]
    assert "entry 0" in reasons["polling.backoff_s"] and "entry 1" in reasons["polling.backoff_s"]
    assert "entry 2" not in reasons["polling.backoff_s"]


def test_server_hostnames_and_hosts_toml_names_must_be_host_names(tmp_path: Path) -> None:
    conf = write(
        tmp_path,
        '[server]\nhostnames = ["ok.example.org", "bad host!", "-x"]\n',
        '[hosts."bad host!"]\npaused = true\n[hosts."web-1.example.org"]\npaused = true\n',
    )
    with pytest.raises(ConfigError) as info:
        load(conf)
    problems = {(p.key, p.reason) for p in info.value.problems}
    keys = {key for key, _ in problems}
    assert keys == {"server.hostnames", 'hosts."bad host!"'}, problems
    hostnames = " ".join(reason for key, reason in problems if key == "server.hostnames")
    assert "'bad host!'" in hostnames and "'-x'" in hostnames
