"""Simulator fidelity (issue 18): each distribution family looks like the real thing to our agent
client over mTLS, and package queries answer as agent-api.md §3.5/§3.6 describe."""

from __future__ import annotations

import re
import statistics
from pathlib import Path
from typing import Any

import httpx2
import pytest
import trio

from actors.agent_client import AgentClient, PatchSelection
from actors.agent_errors import AgentRequestError, TransportError
from actors.agent_records import JobStatus, PackageStatus
from simulator import Fleet, FleetSpec, ScenarioError, SimAgent, generate_profile, load_scenario
from simulator.families import BY_ID, DISTROS, SELF, running_kernel
from simulator.profiles import INSTALLED_RANGE, PENDING_MAX

from ..conftest import Pki

pytestmark = pytest.mark.timeout(60)

# A version in each distribution's native format (epochs allowed where the format has them).
VERSION_FORMAT = {
    "ubuntu": r"^(\d+:)?[0-9][A-Za-z0-9.+~-]*-[A-Za-z0-9.+~]*(ubuntu|build)[A-Za-z0-9.+~]*$",
    "debian": r"^(\d+:)?[0-9][A-Za-z0-9.+~-]*-[0-9]+(\+deb12u[0-9]+)?$",
    "rocky": r"^[0-9][A-Za-z0-9._+]*-[0-9.]+\.el9(_4)?$",  # rpm: no epoch
    "fedora": r"^[0-9][A-Za-z0-9._+]*-[0-9.]+\.fc40$",
    "alpine": r"^[0-9][A-Za-z0-9._]*-r[0-9]+$",
    "arch": r"^(\d+:)?[0-9][A-Za-z0-9.+_]*-[0-9]+$",
}
KERNEL_FORMAT = {
    "ubuntu": r"^6\.8\.0-\d+-generic$",
    "debian": r"^6\.1\.0-\d+-amd64$",
    "rocky": r"^5\.14\.0-427\.\d+\.1\.el9_4\.x86_64$",
    "fedora": r"^6\.\d+\.\d+-200\.fc40\.x86_64$",
    "alpine": r"^6\.6\.\d+-0-lts$",
    "arch": r"^6\.\d+\.\d+-arch1-1$",
}


# system/info: whichever of PRETTY_NAME/NAME and of VERSION/VERSION_ID comes last in
# /etc/os-release (agent-api.md 3.2); Arch has neither version key: "unknown".
SYSTEM_INFO = {"ubuntu": ("Ubuntu", "24.04.1 LTS (Noble Numbat)"),
               "debian": ("Debian GNU/Linux", "12 (bookworm)"),
               "rocky": ("Rocky Linux 9.4 (Blue Onyx)", "9.4"),
               "fedora": ("Fedora Linux 40 (Server Edition)", "40"),
               "alpine": ("Alpine Linux v3.20", "3.20.3"),
               "arch": ("Arch Linux", "unknown")}  # fmt: skip

# What the agent's classifier (error_utils.rs classify_error, over the command's first stderr
# line) makes of installing an unknown package: only apt's wording says "unable to locate
# package"; pacman's "target not found" reads as a network error.
NOT_FOUND_CODE = {"ubuntu": "PKG_NOT_FOUND", "debian": "PKG_NOT_FOUND",
                  "rocky": "PKG_MANAGER_ERROR", "fedora": "PKG_MANAGER_ERROR",
                  "alpine": "PKG_MANAGER_ERROR", "arch": "NETWORK_ERROR"}  # fmt: skip
FIRST_LINE = {"ubuntu": "E: Unable to locate package no-such-package",
              "debian": "E: Unable to locate package no-such-package",
              "rocky": "Error: Unable to find a match: no-such-package",
              "fedora": "Error: Unable to find a match: no-such-package",
              "alpine": "ERROR: unable to select packages:",
              "arch": "error: target not found: no-such-package"}  # fmt: skip
INSTALL_COMMAND = {"ubuntu": "apt-get install -y -- no-such-package",
                   "debian": "apt-get install -y -- no-such-package",
                   "rocky": "dnf install -y -- no-such-package",
                   "fedora": "dnf install -y -- no-such-package",
                   "alpine": "apk add -- no-such-package",
                   "arch": "pacman -S --noconfirm --needed -- no-such-package"}  # fmt: skip


def native(distro_id: str, name: str, version: str) -> bool:
    """``version`` in the distribution's format (kernel and agent packages have their own)."""
    distro = BY_ID[distro_id]
    own = {SELF, *distro.kernels[0].packages, *distro.kernels[1].packages}
    return name in own or re.match(VERSION_FORMAT[distro_id], version) is not None


def client_for(pki: Pki, agent: SimAgent) -> AgentClient:
    return AgentClient(agent.profile.hostname, agent.address, pki.client_context(), port=agent.port)


def raw_client(pki: Pki, agent: SimAgent) -> httpx2.AsyncClient:
    return httpx2.AsyncClient(
        verify=pki.client_context(), base_url=f"https://{agent.address}:{agent.port}"
    )


async def as_distro(start_fleet: Any, distro: str, **spec: Any) -> SimAgent:
    fleet: Fleet = await start_fleet(1, **spec)
    [agent] = fleet.agents
    agent.profile = generate_profile(0, 7, distro=distro)
    return agent


async def wait_done(client: AgentClient, events: Any, job_id: str) -> Any:
    """The job once its terminal event arrived (WebSocket), as ``GET /jobs/{id}`` shows it."""
    with trio.fail_after(20):
        while not ((event := await events.receive()).job_id == job_id and event.status.terminal):
            pass
    return await client.job(job_id)


@pytest.mark.parametrize("distro_id", [d.id for d in DISTROS])
async def test_family_contract_tool_installed_and_hello_installs_updates_removes(
    distro_id: str, pki: Pki, start_fleet: Any
) -> None:
    agent = await as_distro(start_fleet, distro_id)
    distro = BY_ID[distro_id]
    repo = distro.catalog
    async with client_for(pki, agent) as client, client.job_events() as events:
        info = await client.system_info()
        assert (info.os, info.os_version) == SYSTEM_INFO[distro_id]
        assert re.match(KERNEL_FORMAT[distro_id], info.kernel)
        # The packaging tool's own package (issue 18: was 404 PKG_NOT_FOUND).
        tool = await client.package(distro.family.tool)
        assert tool.status is PackageStatus.INSTALLED
        assert tool.version in (
            *repo[distro.family.tool].versions,
            repo[distro.family.tool].previous,
        )
        assert tool.description
        listed = {p.name: p for p in await client.packages()}
        assert set(listed) == set(agent.profile.installed)
        assert {distro.family.tool, SELF} <= set(listed)
        assert all(native(distro_id, n, p.version) for n, p in listed.items())
        assert running_kernel(distro, {n: p.version for n, p in listed.items()}) == info.kernel
        # hello: in the repository, not installed.
        assert "hello" not in listed
        pins = distro.family.pin != ""
        hello = await client.package("hello")
        older, current = repo["hello"].previous, repo["hello"].current
        # apt and dnf repositories keep the older build; apk and pacman only the current one.
        assert repo["hello"].versions == ((older, current) if pins else (current,))
        assert (hello.status, hello.version) == (PackageStatus.AVAILABLE, current)

        # Pinned to the older version where the family pins (apt name=ver, dnf name-ver);
        # apk and pacman repositories carry only the current version and the agent pushes
        # only the name there.
        job = await client.install([("hello", older)])
        assert (await wait_done(client, events, job.job_id)).status is JobStatus.COMPLETED
        hello = await client.package("hello")
        installed = {p.name for p in await client.packages()}
        assert set(repo["hello"].dependencies) <= installed
        if pins:  # no backend's detail says "Upgradable": Installed, with the upgrade
            assert (hello.version, hello.status, hello.upgradable, hello.latest_version) == (
                older, PackageStatus.INSTALLED, True, current
            )  # fmt: skip
            assert "hello" in {p.name for p in (await client.patches()).patches}
            job = await client.update("hello")
            assert (await wait_done(client, events, job.job_id)).status is JobStatus.COMPLETED
            hello = await client.package("hello")
        assert (hello.version, hello.status) == (current, PackageStatus.INSTALLED)
        assert "hello" not in {p.name for p in (await client.patches()).patches}

        job = await client.remove("hello")
        assert (await wait_done(client, events, job.job_id)).status is JobStatus.COMPLETED
        assert "hello" not in {p.name for p in await client.packages()}
        assert (await client.package("hello")).status is PackageStatus.AVAILABLE

        job = await client.install([("no-such-package", None)])
        failed = await wait_done(client, events, job.job_id)
        assert (failed.status, failed.error_code) == (JobStatus.FAILED, NOT_FOUND_CODE[distro_id])
        exit_code, _ = distro.family.not_found
        summary = f"{distro.family.command} failed (exit {exit_code}): {FIRST_LINE[distro_id]}"
        assert (failed.error or "").splitlines()[0] == summary
        assert f"Command failed (exit {exit_code}): {INSTALL_COMMAND[distro_id]}" in failed.logs


@pytest.mark.parametrize("distro_id", ["rocky", "fedora"])
async def test_rpm_versions_carry_no_epoch_except_dnf_check_update_available_version(
    distro_id: str, pki: Pki, start_fleet: Any
) -> None:
    agent = await as_distro(start_fleet, distro_id)
    entry = BY_ID[distro_id].catalog["openssl"]  # upstream 1:3.x
    older, current = entry.versions
    assert entry.epoch == "1:" and ":" not in older + current
    agent.profile.installed["openssl"] = older
    agent.profile.upgradable["openssl"] = current
    async with client_for(pki, agent) as client:
        [patch] = [p for p in (await client.patches()).patches if p.name == "openssl"]
        detail = await client.package("openssl")
        listed = {p.name: p.version for p in await client.packages()}
    assert (patch.current_version, patch.available_version) == (older, f"1:{current}")
    assert (detail.version, listed["openssl"]) == (older, older)
    assert not any(":" in v for v in listed.values())


# Per family: (package the system cannot lose, error code of refusing to remove it), whether
# removing a library removes what depends on it (else: refused), and the outcome of removing /
# updating the known but not installed "hello" (None: the job completes; pacman's "update" is
# -S, which installs it).
REMOVAL = {
    "apt": (("bash", "PKG_MANAGER_ERROR"), True, None, None),
    "dnf": (("dnf", "PKG_MANAGER_ERROR"), True, "PKG_MANAGER_ERROR", "PKG_MANAGER_ERROR"),
    "apk": (("musl", "PKG_MANAGER_ERROR"), False, None, None),
    "pacman": (("glibc", "DEPENDENCY_CONFLICT"), False, "NETWORK_ERROR", None),
}


@pytest.mark.parametrize("distro_id", [d.id for d in DISTROS])
async def test_remove_and_update_follow_each_tools_semantics(
    distro_id: str, pki: Pki, start_fleet: Any
) -> None:
    agent = await as_distro(start_fleet, distro_id)
    family = BY_ID[distro_id].family
    (vital, vital_code), cascades, remove_missing, update_missing = REMOVAL[family.name]
    library = BY_ID[distro_id].catalog["jq"].dependencies[0]
    async with client_for(pki, agent) as client, client.job_events() as events:

        async def run(job: Any) -> Any:
            return await wait_done(client, events, job.job_id)

        before = dict(agent.profile.installed)
        refused = await run(await client.remove(vital))
        assert (refused.status, refused.error_code) == (JobStatus.FAILED, vital_code)
        assert agent.profile.installed == before

        assert (await run(await client.install([("jq", None)]))).status is JobStatus.COMPLETED
        removed = await run(await client.remove(library))
        installed = {p.name for p in await client.packages()}
        if cascades:  # apt-get remove / dnf remove take the dependent package along
            assert removed.status is JobStatus.COMPLETED
            assert not {"jq", library} & installed
        else:  # apk del / pacman -R refuse while jq needs it
            assert (removed.status, removed.error_code) == (
                JobStatus.FAILED, "DEPENDENCY_CONFLICT" if family.name == "pacman"
                else "PKG_MANAGER_ERROR"
            )  # fmt: skip
            assert {"jq", library} <= installed

        assert "hello" not in installed
        gone = await run(await client.remove("hello"))
        if remove_missing is None:
            assert gone.status is JobStatus.COMPLETED
        else:
            assert (gone.status, gone.error_code) == (JobStatus.FAILED, remove_missing)
        updated = await run(await client.update("hello"))
        if update_missing is None:
            assert updated.status is JobStatus.COMPLETED
        else:
            assert (updated.status, updated.error_code) == (JobStatus.FAILED, update_missing)
        hello_installed = "hello" in {p.name for p in await client.packages()}
        assert hello_installed == (family.name == "pacman")


# An installed package's detail per backend: size, install date, whether dependencies are the
# catalog names, rpm capabilities or never parsed (apk), and whether reverse dependencies are
# filled (apk, pacman).
DETAIL = {
    "apt": (r"^\d+ KB$", None, "names", False),
    "dnf": (r"^\d+$", r"^\w{3} \d\d \w{3} \d{4} \d\d$", "capabilities", False),
    "apk": (r"^\d+ bytes$", None, "none", True),
    "pacman": (r"^\d+\.\d\d [KM]iB$", r"^\w{3} \d\d \w{3} \d{4} \d\d:\d\d:\d\d [AP]M UTC$",
               "names", True),
}  # fmt: skip


@pytest.mark.parametrize("distro_id", [d.id for d in DISTROS])
async def test_package_fields_follow_each_backends_format(
    distro_id: str, pki: Pki, start_fleet: Any
) -> None:
    agent = await as_distro(start_fleet, distro_id)
    family = BY_ID[distro_id].family.name
    size, date, deps, reverse = DETAIL[family]
    library = BY_ID[distro_id].catalog["jq"].dependencies[0]  # installed with jq below
    entry = agent.profile.repo[library]
    agent.profile.installed["jq"] = agent.profile.repo["jq"].current
    agent.profile.installed[library] = entry.current
    async with raw_client(pki, agent) as http:
        detail = (await http.get(f"/api/v1/packages/{library}")).json()["data"]
        hello = (await http.get("/api/v1/packages/hello")).json()["data"]
        listed = (await http.get("/api/v1/packages")).json()["data"]["packages"]
    assert re.match(size, detail["size_installed"]), detail["size_installed"]
    if date is None:
        assert detail["install_date"] is None
    else:
        assert re.match(date, detail["install_date"]), detail["install_date"]
    expected_deps = {
        "names": list(entry.dependencies),
        "capabilities": [f"{d}(x86-64)" for d in entry.dependencies],
        "none": [],
    }[deps]
    assert detail["dependencies"] == expected_deps
    assert ("jq" in detail["reverse_dependencies"]) is reverse
    # Only the apt parser fills latest_version in list entries and not-installed details.
    apt = family == "apt"
    assert all((p["latest_version"] is not None) is apt for p in listed)
    assert (hello["status"], hello["latest_version"] is not None) == ("Available", apt)
    assert bool(hello["description"]) is (family in ("dnf", "pacman"))  # dnf info, pacman -Si


FULL_UPGRADE = {"apt": "apt-get dist-upgrade -y", "dnf": "dnf upgrade -y", "apk": "apk upgrade",
                "pacman": "pacman -Syu --noconfirm"}  # fmt: skip


@pytest.mark.parametrize("distro_id", [d.id for d in DISTROS])
async def test_injected_failures_keep_their_code_in_the_tools_own_words(
    distro_id: str, pki: Pki, start_fleet: Any
) -> None:
    agent = await as_distro(start_fleet, distro_id)
    family = BY_ID[distro_id].family
    codes = ["NETWORK_ERROR", "GPG_ERROR", "DEPENDENCY_CONFLICT", "PERMISSION_DENIED",
             "PKG_MANAGER_ERROR", "CACHE_REFRESH_ERROR"]  # fmt: skip
    agent.set_faults({"job_failures": codes})
    async with client_for(pki, agent) as client, client.job_events() as events:
        for code in codes:
            failed = await wait_done(
                client, events, (await client.install([("hello", None)])).job_id
            )
            assert (failed.status, failed.error_code) == (JobStatus.FAILED, code)
            stderr = failed.command_stderr or ""
            assert (failed.error or "").startswith(f"{family.command} failed (exit ")
            # apt's "E:"/"W:" lines only on apt; each other tool words it its own way.
            assert stderr.startswith(("E: ", "W: ")) is (family.name == "apt"), stderr
            if family.name != "apt":
                assert stderr == family.failures[code][1].format(pkg="hello") + "\n"
        # A patch apply of everything runs the family's full-upgrade command.
        agent.set_faults({"job_failures": ["PKG_MANAGER_ERROR"]})
        job = await client.apply_patches(PatchSelection.all(), allow_reboot=False)
        failed = await wait_done(client, events, job.job_id)
        assert any(line.endswith(f": {FULL_UPGRADE[family.name]}") for line in failed.logs)


async def test_install_pulls_in_missing_dependencies(pki: Pki, start_fleet: Any) -> None:
    agent = await as_distro(start_fleet, "debian")
    for name in ("htop", "libnl-3-200", "libnl-genl-3-200", "libncursesw6"):
        agent.profile.installed.pop(name, None)
        agent.profile.upgradable.pop(name, None)
    async with client_for(pki, agent) as client, client.job_events() as events:
        job = await client.install([("htop", None)])
        done = await wait_done(client, events, job.job_id)
        assert done.status is JobStatus.COMPLETED
        installed = {p.name: p.version for p in await client.packages()}
    repo = BY_ID["debian"].catalog
    for name in ("htop", "libnl-3-200", "libnl-genl-3-200", "libncursesw6"):
        assert installed[name] == repo[name].current
    assert done.packages == ("htop",)  # the job names what was asked for


async def test_package_list_queries_follow_agent_api_including_quirks(
    pki: Pki, start_fleet: Any
) -> None:
    apt = await as_distro(start_fleet, "ubuntu")
    rpm = await as_distro(start_fleet, "rocky")
    apk = await as_distro(start_fleet, "alpine")
    pacman = await as_distro(start_fleet, "arch")
    for agent in (apt, rpm):
        agent.profile.upgradable["openssl"] = "9.9.9-1"

    async def listing(agent: SimAgent, **params: str) -> list[dict[str, Any]]:
        async with raw_client(pki, agent) as http:
            response = await http.get("/api/v1/packages", params=params)
        assert response.status_code == 200, response.text
        data = response.json()["data"]
        assert data["total"] == len(data["packages"])
        return data["packages"]  # type: ignore[no-any-return]

    everything = await listing(apt)
    assert {p["name"] for p in everything} == set(apt.profile.installed)  # installed only
    assert [p["name"] for p in everything] == sorted(p["name"] for p in everything)
    openssl = next(p for p in everything if p["name"] == "openssl")
    # The apt parser reads "[installed,upgradable to: X]" as plain installed (§3.5).
    assert (openssl["status"], openssl["upgradable"]) == ("Installed", False)
    assert openssl["latest_version"] == openssl["version"]
    assert openssl["dependencies"] == [] and openssl["size_installed"] is None
    assert await listing(apt, status="upgradable") == []
    assert await listing(apt, upgradable="true") == []
    assert len(await listing(apt, limit="1", offset="3")) == len(everything)  # ignored
    assert len(await listing(apt, status="whatever")) == len(everything)  # no filter
    for order in ("desc", "whatever"):  # anything but "asc" sorts descending
        assert [p["name"] for p in await listing(apt, order=order)] == sorted(
            (p["name"] for p in everything), reverse=True
        )
    by_version = [p["version"] for p in await listing(apt, sort="version")]
    assert by_version == sorted(by_version)

    # apt list <name>: globs over installed and repository packages.
    [hello] = await listing(apt, name="hello")
    assert (hello["status"], hello["version"]) == (
        "Available",
        BY_ID["ubuntu"].catalog["hello"].current,
    )
    assert {p["name"] for p in await listing(apt, name="hel*")} >= {"hello"}
    assert await listing(apt, name="hello", status="installed") == []
    assert [p["name"] for p in await listing(apt, name="hello", status="available")] == ["hello"]
    # apt list <name> prints the candidate line of an upgradable package: the new version.
    [named] = await listing(apt, name="openssl")
    assert (named["status"], named["upgradable"], named["version"]) == (
        "Upgradable", True, "9.9.9-1"
    )  # fmt: skip
    assert [p["name"] for p in await listing(apt, name="openssl", upgradable="true")] == ["openssl"]
    # apk list --installed <name>: globs over installed packages only.
    assert await listing(apk, name="hello") == []
    assert [p["name"] for p in await listing(apk, name="libss*")] == ["libssl3"]
    # pacman -Q <name>: one exact installed name; no match exits 1, which the agent answers 500.
    [openssl] = await listing(pacman, name="openssl")
    assert (openssl["status"], openssl["version"]) == (
        "Installed",
        pacman.profile.installed["openssl"],
    )
    for pattern in ("hello", "openss*"):
        async with raw_client(pki, pacman) as http:
            failed = await http.get("/api/v1/packages", params={"name": pattern})
        assert failed.status_code == 500
        assert failed.json()["error"]["code"] == "PKG_MANAGER_ERROR"
    # rpm -qa <name>, then names containing it: installed only, and a glob matches nothing.
    assert await listing(rpm, name="hello") == []
    assert [p["name"] for p in await listing(rpm, name="openssl")] == ["openssl"]
    assert await listing(rpm, name="openss*") == []

    async with raw_client(pki, apt) as http:
        bad = await http.get("/api/v1/packages", params={"upgradable": "yes"})
        assert bad.status_code == 400 and bad.headers["content-type"].startswith("text/plain")
        assert bad.text.startswith("Query deserialize error")

        detail = (await http.get("/api/v1/packages/openssl")).json()["data"]
        assert (detail["status"], detail["upgradable"], detail["latest_version"]) == (
            "Installed", True, "9.9.9-1"
        )  # fmt: skip
        bash = (await http.get("/api/v1/packages/bash")).json()["data"]
        entry = BY_ID["ubuntu"].catalog["bash"]
        assert bash["description"] == entry.description
        assert bash["dependencies"] == list(entry.dependencies)
        assert bash["size_installed"] == f"{entry.size_kb} KB"
        assert (bash["reverse_dependencies"], bash["install_date"]) == ([], None)
        missing = await http.get("/api/v1/packages/no-such-package")
        assert missing.status_code == 404
        assert missing.json()["error"]["code"] == "PKG_NOT_FOUND"
        assert missing.json()["error"]["message"] == "Package 'no-such-package' not found"
        invalid = await http.get("/api/v1/packages/-bad")
        assert (invalid.status_code, invalid.json()["error"]["code"]) == (400, "VALIDATION_ERROR")


@pytest.mark.parametrize("distro_id", [d.id for d in DISTROS])
async def test_reboot_after_a_kernel_update_reports_the_new_kernel(
    distro_id: str, pki: Pki, start_fleet: Any
) -> None:
    fleet: Fleet = await start_fleet(1)
    [agent] = fleet.agents
    distro = BY_ID[distro_id]
    running, newer = distro.kernels
    agent.profile = next(
        p
        for i in range(200)
        if (p := generate_profile(i, 7, distro=distro_id)).kernel == running.release
    )
    async with client_for(pki, agent) as client:
        assert (await client.system_info()).kernel == running.release
        kernel_patches = [p.name for p in (await client.patches()).patches
                          if p.name in newer.packages]  # fmt: skip
        assert kernel_patches
        for name in kernel_patches:
            assert (await client.package(name)).latest_version == newer.packages[name]
        with trio.fail_after(20):
            async with client.job_events() as events:
                job = await client.apply_patches(
                    PatchSelection.only(kernel_patches), allow_reboot=True
                )
                with pytest.raises(TransportError):  # the host goes down for the reboot
                    while True:
                        await events.receive()
            await agent.wait_listening()  # and comes back
        assert (await client.system_info()).kernel == newer.release
        assert (await client.job(job.job_id)).status is JobStatus.COMPLETED
        installed = {p.name: p.version for p in await client.packages()}
    assert {n: installed.get(n) for n in newer.packages} == dict(newer.packages)


def test_small_profile_hosts_are_distribution_faithful() -> None:
    profiles = [generate_profile(i, 3) for i in range(120)]
    assert {p.distro_id for p in profiles} == set(BY_ID)
    for p in profiles:
        distro = BY_ID[p.distro_id]
        assert {distro.family.tool, SELF} <= set(p.installed) and "hello" not in p.installed
        assert set(distro.base_names) <= set(p.installed)
        assert running_kernel(distro, p.installed) == p.kernel
        assert re.match(KERNEL_FORMAT[p.distro_id], p.kernel)
        for name, version in (*p.installed.items(), *p.upgradable.items()):
            assert native(p.distro_id, name, version), (p.distro_id, name, version)
        assert 25 <= len(p.installed) <= 110
        assert len(p.upgradable) <= 12 + len(distro.kernels[1].packages)
        assert all(p.upgradable[n] == p.repo[n].current for n in p.upgradable)
    apt_versions = [v for p in profiles if p.family == "apt" for v in p.installed.values()]
    assert any(":" in v for v in apt_versions)  # deb epochs
    assert generate_profile(5, 3).installed == generate_profile(5, 3).installed  # repeatable


def test_realistic_profile_counts_follow_the_distributions() -> None:
    profiles = [generate_profile(i, 1, "realistic") for i in range(150)]
    counts = [len(p.installed) for p in profiles]
    pending = [len(p.upgradable) for p in profiles]
    assert INSTALLED_RANGE[0] <= min(counts) and max(counts) <= INSTALLED_RANGE[1]
    assert 1_000 <= statistics.median(counts) <= 1_400
    assert max(pending) <= PENDING_MAX and min(pending) <= 5 and statistics.median(pending) >= 5
    with_cves = [(p, n) for p in profiles for n in p.cve_ids]
    assert with_cves
    for p, name in with_cves:
        assert name in p.upgradable
        assert all(re.match(r"^CVE-20\d\d-\d{4,}$", c) for c in p.cve_ids[name])
    for p in profiles[:20]:
        distro = BY_ID[p.distro_id]
        assert set(distro.base_names) <= set(p.installed)
        assert all(native(p.distro_id, n, v) for n, v in p.installed.items())
    with pytest.raises(ScenarioError, match="unknown profile"):
        FleetSpec(profile="huge")


def test_scenario_with_an_unknown_profile_is_one_error_naming_file_and_key(tmp_path: Path) -> None:
    scenario = tmp_path / "fleet.toml"
    scenario.write_text('[fleet]\ncount = 2\nprofile = "huge"\n')
    with pytest.raises(ScenarioError) as info:
        load_scenario(scenario)
    assert str(info.value) == (
        f"{scenario}: fleet: fleet.profile: unknown profile 'huge' (known: small, realistic)"
    )
    scenario.write_text('[fleet]\nprofile = "realistic"\n')
    assert load_scenario(scenario).spec.profile == "realistic"


async def test_realistic_patches_carry_cve_ids_only_when_the_fleet_asks_for_them(
    pki: Pki, start_fleet: Any
) -> None:
    # Default: as the real agent, which sends cve_ids [] today (agent-api.md §3.10).
    fleet: Fleet = await start_fleet(4, profile="realistic")
    agent = max(fleet.agents, key=lambda a: len(a.profile.cve_ids))
    assert agent.profile.cve_ids
    async with client_for(pki, agent) as client:
        patches = (await client.patches()).patches
        packages = await client.packages()
    assert len(packages) == len(agent.profile.installed) >= INSTALLED_RANGE[0]
    assert {p.name for p in patches} == set(agent.profile.upgradable)
    assert all(p.cve_ids == () for p in patches)

    fleet = await start_fleet(4, profile="realistic", cve_ids=True)
    agent = max(fleet.agents, key=lambda a: len(a.profile.cve_ids))
    async with client_for(pki, agent) as client:
        patches = (await client.patches()).patches
    assert any(p.cve_ids for p in patches)
    assert all(bool(p.cve_ids) == (p.severity in ("critical", "high")) for p in patches)


def test_scenario_cve_ids_is_a_boolean_defaulting_to_false(tmp_path: Path) -> None:
    scenario = tmp_path / "fleet.toml"
    scenario.write_text('[fleet]\nprofile = "realistic"\n')
    assert load_scenario(scenario).spec.cve_ids is False
    scenario.write_text('[fleet]\nprofile = "realistic"\ncve_ids = true\n')
    assert load_scenario(scenario).spec.cve_ids is True
    scenario.write_text('[fleet]\ncve_ids = "yes"\n')
    with pytest.raises(ScenarioError) as info:
        load_scenario(scenario)
    assert str(info.value) == f"{scenario}: fleet: fleet.cve_ids: expected true or false, not 'yes'"


async def test_unknown_package_detail_is_404_not_500(pki: Pki, start_fleet: Any) -> None:
    agent = await as_distro(start_fleet, "alpine")
    async with client_for(pki, agent) as client:
        with pytest.raises(AgentRequestError) as info:
            await client.package("does-not-exist")
    assert (info.value.status, info.value.code) == (404, "PKG_NOT_FOUND")


# Installing an older version than the one installed (what a rollback asks): apt-get install -y
# refuses without --allow-downgrades (the agent passes none); dnf install NEVRA installs the
# version asked for (maintenance.downgrade_refusal says the same; apk and pacman are never asked).
DOWNGRADES = {"apt": False, "dnf": True}


@pytest.mark.parametrize("distro_id", [d.id for d in DISTROS if d.family.name in DOWNGRADES])
async def test_an_older_version_installs_where_the_tool_downgrades_and_is_refused_by_apt(
    distro_id: str, pki: Pki, start_fleet: Any
) -> None:
    agent = await as_distro(start_fleet, distro_id)
    profile = agent.profile
    name = next(n for n in sorted(profile.upgradable) if n in profile.installed)
    old = profile.installed[name]
    async with client_for(pki, agent) as client, client.job_events() as events:
        updated = await wait_done(client, events, (await client.update(name)).job_id)
        assert updated.status is JobStatus.COMPLETED and profile.installed[name] != old
        back = await wait_done(client, events, (await client.install([(name, old)])).job_id)
    if DOWNGRADES[BY_ID[distro_id].family.name]:
        assert back.status is JobStatus.COMPLETED
        assert profile.installed[name] == old
    else:
        assert back.status is JobStatus.FAILED
        assert "--allow-downgrades" in f"{back.command_stderr} {back.error}"
        assert profile.installed[name] != old
