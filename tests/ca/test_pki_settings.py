"""[pki] limits that keep the certificate lifecycle safe."""

from __future__ import annotations

from pathlib import Path

import pytest

from settings import ConfigError, load


def test_crl_interval_s_above_two_days_is_refused_as_the_crl_lives_seven(tmp_path: Path) -> None:
    (tmp_path / "patch-manager.toml").write_text("[pki]\ncrl_interval_s = 259200\n")
    with pytest.raises(ConfigError) as info:
        load(tmp_path)
    [problem] = info.value.problems
    assert problem.key == "pki.crl_interval_s" and "at most 172800" in problem.reason
    (tmp_path / "patch-manager.toml").write_text("[pki]\ncrl_interval_s = 172800\n")
    assert load(tmp_path).pki.crl_interval_s == 172_800
