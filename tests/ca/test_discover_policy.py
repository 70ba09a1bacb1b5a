"""`patch-manager discover` refuses the certificates the server refuses (revoked agents, the
manager's own) when it probes agents."""

from __future__ import annotations

from pathlib import Path

from ca import CertificateAuthority, CertKind
from patch_manager.hosts_cli import discovery_context
from patch_manager.runtime import record_certificates
from storage import Database, revoke_certificate


async def test_discovery_context_refuses_revoked_agent_and_manager_certificates(
    db: Database, tmp_path: Path
) -> None:
    ca, _ = CertificateAuthority.init(tmp_path / "ca")
    revoked = ca.issue_agent(["old.example.com"]).record
    fine = ca.issue_agent(["new.example.com"]).record
    await record_certificates(db, [revoked, fine])
    await db.run(revoke_certificate, revoked.serial)
    _, policy = await discovery_context(db, ca)
    assert policy.revoked == {revoked.serial}
    web = ca.current(CertKind.WEB_SERVER).serial
    assert web in policy.not_agent and fine.serial not in policy.not_agent | policy.revoked
