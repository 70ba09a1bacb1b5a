"""The pure parts of deployment plans: chosen patches, drift, batches, downgrade support."""

from __future__ import annotations

from maintenance import (
    Pending,
    assign_batches,
    chosen,
    downgrade_refusal,
    drift,
    is_downgrade,
    package_manager,
)

PENDING = [
    Pending("curl", "8.0", "8.1", "high", False),
    Pending("vim", "9.0", "9.1", "medium", False),
    Pending("linux-image", "6.1", "6.2", "critical", True),
]


def test_chosen_patches_by_selection() -> None:
    assert [p.name for p in chosen(PENDING, "all", ())] == ["curl", "vim", "linux-image"]
    assert [p.name for p in chosen(PENDING, "security", ())] == ["curl", "linux-image"]
    assert [p.name for p in chosen(PENDING, "list", ["vim", "absent"])] == ["vim"]


def test_drift_names_newer_gone_and_unplanned_packages() -> None:
    planned = {"curl": "8.1", "vim": "9.1"}
    assert drift(planned, PENDING[:2], "list") == ""
    newer = [Pending("curl", "8.0", "8.2", "high", False), PENDING[2]]
    assert drift(planned, newer, "list") == (
        "1 package newer than planned (curl); 1 package no longer pending (vim)"
    )
    assert drift(planned, [*PENDING[:2], PENDING[2]], "all") == (
        "1 package pending that the plan did not have (linux-image)"
    )


def test_batches_by_size_percent_and_canary() -> None:
    assert assign_batches(5, batch_size=2, batch_percent=None, canary=False) == [0, 0, 1, 1, 2]
    assert assign_batches(4, batch_size=None, batch_percent=50, canary=False) == [0, 0, 1, 1]
    assert assign_batches(20, batch_size=None, batch_percent=None, canary=True)[:3] == [0, 0, 1]


def test_downgrade_support_by_package_manager() -> None:
    assert package_manager("Debian GNU/Linux") == "apt"
    assert package_manager("Rocky Linux 9.4 (Blue Onyx)") == "dnf"
    assert package_manager("Alpine Linux v3.20") == "apk"
    assert downgrade_refusal("Ubuntu").startswith("apt hosts cannot go back")
    assert downgrade_refusal("Rocky Linux 9.4 (Blue Onyx)") == ""
    assert downgrade_refusal("Alpine Linux v3.20").startswith("apk hosts cannot go back")
    assert "never polled" in downgrade_refusal("")
    assert is_downgrade({"curl": "8.0"}, {"curl": "8.1"})
    assert not is_downgrade({"curl": "8.0"}, {})  # removed: putting it back is no downgrade


def test_the_package_manager_follows_the_os_version_where_the_os_name_does_not_tell() -> None:
    cases = [
        ("Red Hat Enterprise Linux Server", "7.9", "yum"),
        ("Red Hat Enterprise Linux", "9.4", "dnf"),
        ("Oracle Linux Server", "7.9", "yum"),
        ("Oracle Linux Server", "8.10", "dnf"),
        ("CentOS Linux", "7", "yum"),
        ("CentOS Linux", "8", "dnf"),
        ("CentOS Stream", "9", "dnf"),
        ("Amazon Linux", "2", "yum"),
        ("Amazon Linux", "2023", "dnf"),
        ("Rocky Linux 9.4 (Blue Onyx)", "", "dnf"),
    ]
    for name, version, family in cases:
        assert package_manager(name, version) == family, (name, version)
    assert downgrade_refusal("Amazon Linux", "2023") == ""
    assert downgrade_refusal("CentOS Linux", "7").startswith("yum hosts cannot go back")
