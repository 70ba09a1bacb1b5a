"""The ``patch-manager`` command. Errors are one clear line on stderr and a non-zero exit."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import trio

from actors import RegistrationError
from actors.registration import normalise_name, valid_group
from ca import CAError, CertificateAuthority, CertKind, passphrase_from
from ca.keys import AUDIT_KEY_ENV, AUDIT_KEY_FILE
from settings import (
    ConfigError,
    ConfigStore,
    as_table,
    effective_policy,
    load,
    permit_addresses,
)
from simulator import PROFILES, AgentListenError, ScenarioError
from storage import (
    AuditEntry,
    Database,
    StorageError,
    StoredCertificate,
    list_certificates,
    revoke_certificate,
    revoked_serials,
    run_audited,
)
from web import ListenError

from . import __version__, audit_cli, enrol_cli, hosts_cli, logs, paths, tokens_cli, users_cli
from .paths import database_data_dir, default_conf_dir, default_data_dir
from .runtime import open_storage, record_certificates

log = logging.getLogger("patch_manager")

EXIT_ERROR = 1
EXIT_USAGE = 2


class CliError(Exception):
    """A failure to report as one line."""


class UsageError(CliError):
    """A command-line argument that cannot be used (exit status 2, like argparse's own)."""


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--conf-dir", type=Path, default=None, help=f"config directory ({default_conf_dir()})"
    )
    parser.add_argument("--data-dir", type=Path, default=None,
                        help=f"data directory (default: {default_data_dir()})")  # fmt: skip
    parser.add_argument("--log-level", choices=["debug", "info", "warning", "error"],
                        help="overrides logging.level")  # fmt: skip
    parser.add_argument("--log-format", choices=["json", "text", "auto"],
                        help="overrides logging.format")  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="patch-manager",
        description="Linux Patch Manager: keep a fleet of Linux hosts patched.",
    )
    parser.add_argument("--version", action="version", version=f"patch-manager {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("serve", help="run the server (embedded PostgreSQL unless configured)")
    _common(p)
    p.add_argument("--bind", help="override server.bind, e.g. 127.0.0.1:0 for a free port")

    p = sub.add_parser("demo", help="the server plus a simulated fleet, in one command")
    _common(p)
    p.add_argument("--bind", help="override server.bind")
    p.add_argument("--count", type=int, default=50, help="simulated agents (default 50)")
    p.add_argument("--base-address", default="127.77.0.1", help="first simulated agent address")
    p.add_argument(
        "--time-scale",
        type=float,
        default=0.05,
        help="job duration factor of the simulated agents (default 0.05)",
    )
    p.add_argument("--profile", choices=PROFILES, default="small",
                   help="simulated package lists: small (default) or realistic (hundreds to "
                        "thousands of packages a host)")  # fmt: skip

    p = sub.add_parser("reset-password", help="set a new random password for a user")
    _common(p)
    p.add_argument("--user", default="admin", help="user name (default admin)")

    p = sub.add_parser("migrate", help="apply database migrations and exit")
    _common(p)

    p = sub.add_parser("check-config", help="validate conf/ and print the effective settings")
    _common(p)
    p.add_argument("--host", help="print the effective polling policy of this host")
    p.add_argument("--group", action="append", default=[],
                   help="a group the host belongs to (repeatable; used with --host)")  # fmt: skip

    ca = sub.add_parser("ca", help="the internal certificate authority")
    ca_sub = ca.add_subparsers(dest="ca_command", required=True, metavar="ACTION")
    p = ca_sub.add_parser("init", help="create the root CA and the manager's certificates")
    _common(p)
    p = ca_sub.add_parser(
        "issue-agent", help="issue agent server certificates (one per name unless --san)"
    )
    _common(p)
    p.add_argument("names", nargs="+", help="FQDN or IP address of each agent")
    p.add_argument("--san", action="store_true",
                   help="one certificate whose SAN holds every name given")  # fmt: skip
    p.add_argument("--out", type=Path, default=Path("."),
                   help="where NAME/{ca,server,server.key,crl}.pem go")  # fmt: skip
    p = ca_sub.add_parser(
        "renew", help="renew the manager's client and/or web certificate, or an agent's, now"
    )
    _common(p)
    p.add_argument("serial", nargs="?", help="an agent certificate's serial (hex): reissue it")
    p.add_argument("--manager", action="store_true", help="the agent client certificate")
    p.add_argument("--web", action="store_true", help="the web UI certificate")
    p.add_argument("--out", type=Path, default=Path("."),
                   help="with SERIAL: where NAME/{ca,server,server.key,crl}.pem go")  # fmt: skip
    p = ca_sub.add_parser("revoke", help="revoke a certificate and rewrite the CRL")
    _common(p)
    p.add_argument("serial", help="serial number in hex (as `ca issue-agent` printed it)")
    p = ca_sub.add_parser("export-root", help="print the root CA certificate (PEM)")
    _common(p)
    p = ca_sub.add_parser("list", help="list every certificate the CA issued")
    _common(p)

    hosts_cli.add_parsers(sub, _common)
    users_cli.add_parsers(sub, _common)
    tokens_cli.add_parsers(sub, _common)
    enrol_cli.add_parsers(sub, _common)
    audit_cli.add_parsers(sub, _common)

    p = sub.add_parser("simulate", help="serve simulated agents on loopback addresses")
    _common(p)
    p.add_argument("--count", type=int, help="number of agents (default 50)")
    p.add_argument("--seed", type=int, help="fleet seed (same seed, same fleet)")
    p.add_argument("--base-address", help="first agent address (default 127.77.0.1)")
    p.add_argument(
        "--port", type=int, help="agent port (default 12443; 0 = one address, many ports)"
    )
    p.add_argument("--time-scale", type=float, help="job duration factor (0.01 = 100x faster)")
    p.add_argument("--profile", choices=PROFILES,
                   help="package lists: small (default) or realistic (300-2,500 packages, "
                        "0-150 pending patches a host)")  # fmt: skip
    p.add_argument("--scenario", type=Path, help="TOML scenario: [fleet] and [faults.*]")
    p.add_argument("--whitelist", type=Path, help="whitelist.yaml in the agent's format")
    p.add_argument(
        "--control-socket", type=Path, help="control API socket (DATA_DIR/simulator.sock)"
    )
    p.add_argument("--enrol", metavar="URL",
                   help="the agents enrol with the manager at URL (https://127.x.y.z:PORT) "
                        "and serve once approved")  # fmt: skip

    p = sub.add_parser("sim-ctl", help="send one request to a running simulator")
    _common(p)
    p.add_argument("request", help='JSON, e.g. \'{"action": "faults", "target": "all", '
                   '"set": {"down": true}}\'')  # fmt: skip
    p.add_argument("--control-socket", type=Path)
    return parser


# -- helpers ------------------------------------------------------------------------------------


# Commands that choose their data directory themselves (a server announces itself) or use none.
_OWN_DATA_DIR = ("serve", "demo", "check-config")
# Commands that use the data directory (CA files, control socket) but never the database.
_NO_DATABASE = ("simulate", "sim-ctl")


def _dirs(args: argparse.Namespace) -> tuple[Path, Path]:
    """The configuration and data directories. Without ``--data-dir``, every command but the
    servers uses the running server's data directory (``paths.database_data_dir``) and says
    which one in one line on stderr (once)."""
    conf_dir = args.conf_dir or default_conf_dir()
    if args.data_dir is not None or args.command in _OWN_DATA_DIR:
        return conf_dir, args.data_dir or default_data_dir()
    resolved = getattr(args, "resolved_data_dir", None)
    if resolved is None:
        try:
            db = load(conf_dir).database
            embedded = not (db.url or db.url_env)
        except ConfigError:
            embedded = True  # the command reports the error when it loads the configuration
        if args.command in _NO_DATABASE or getattr(args, "ca_command", "") == "export-root":
            embedded = False  # no database is created: nothing to warn about
        resolved, note = database_data_dir(None, embedded=embedded)
        args.resolved_data_dir = resolved
        if note:
            print(f"patch-manager: {note}", file=sys.stderr)
    return conf_dir, resolved


# The demo's simulated agents live on loopback, which the address policy refuses by default.
DEMO_ALLOWED = ("127.0.0.0/8",)


def _store(args: argparse.Namespace, *, demo: bool = False) -> ConfigStore:
    conf_dir, _ = _dirs(args)
    store = ConfigStore(
        conf_dir, overlay=(lambda c: permit_addresses(c, DEMO_ALLOWED)) if demo else None
    )
    cfg = store.current.logging
    logs.configure(args.log_level or cfg.level, args.log_format or cfg.format)
    return store


def _with_database(args: argparse.Namespace, work: Callable[[Database], Awaitable[Any]]) -> Any:
    """Run ``work(db)`` with the database up (attaching to a running server's cluster)."""
    store = _store(args)
    _, data_dir = _dirs(args)

    async def main() -> Any:
        async with trio.open_nursery() as nursery:
            async with open_storage(nursery, store.current, data_dir) as storage:
                result = await work(storage.db)
            nursery.cancel_scope.cancel()
        return result

    return trio.run(main)


def _passphrase(args: argparse.Namespace) -> bytes | None:
    pki = _store(args).current.pki
    return passphrase_from(pki.ca_passphrase_env, pki.ca_passphrase_file)


def _open_ca(data_dir: Path, args: argparse.Namespace) -> CertificateAuthority:
    return CertificateAuthority(data_dir / "ca", passphrase=_passphrase(args))


# -- commands -----------------------------------------------------------------------------------


def _run_server(
    args: argparse.Namespace, data_dir: Path, run: Callable[[Callable[[Any], None]], Any]
) -> None:
    """Run a server. Once it is ready its banner is printed, framed so that it stands out of the
    log lines, with the data directory the other commands use; one on the default data
    directory announces itself while it runs (``paths.announce``) so that they find it: from
    before it opens its database (initdb, the first polls can take a while), then again with
    its URL once it serves."""
    from .serve import ServerInfo, print_banner

    implicit = args.data_dir is None
    if implicit:
        data_dir.mkdir(parents=True, exist_ok=True)
        paths.announce(data_dir, "")

    def ready(info: ServerInfo) -> None:
        if implicit:
            paths.announce(data_dir, info.urls[0] if info.urls else "")
        rule = "=" * 78
        print(f"\n{rule}", flush=True)
        print_banner(info)
        print(f"  data:     {data_dir}", flush=True)
        if implicit:
            print("  (while it runs, other patch-manager commands use this data directory; "
                  f"afterwards pass --data-dir {data_dir})", flush=True)  # fmt: skip
        print(f"{rule}\n", flush=True)
        paths.bootstrap_marker(data_dir).unlink(missing_ok=True)  # its password has been shown

    try:
        trio.run(lambda: run(ready))
    finally:
        paths.withdraw()


def cmd_serve(args: argparse.Namespace) -> int:
    from .serve import run_server

    store = _store(args)
    _, data_dir = _dirs(args)
    _run_server(
        args, data_dir, lambda ready: run_server(store, data_dir, bind=args.bind, on_ready=ready)
    )
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .serve import DemoSpec, run_server

    store = _store(args, demo=True)
    _, data_dir = _dirs(args)
    if args.data_dir is None:
        data_dir = data_dir / "demo"  # keep the demo's hosts out of the real data directory
    demo = DemoSpec(count=args.count, time_scale=args.time_scale, base_address=args.base_address,
                    profile=args.profile)  # fmt: skip
    _run_server(args, data_dir, lambda ready: run_server(store, data_dir, bind=args.bind,
                                                         on_ready=ready, demo=demo))  # fmt: skip
    return 0


def cmd_reset_password(args: argparse.Namespace) -> int:
    from web import Auth

    from .serve import UnknownUser, reset_password_counted

    async def work(db: Database) -> tuple[str, int]:
        try:
            return await reset_password_counted(
                db, Auth(db), args.user.strip().lower(), must_change=True,
                actor=audit_cli.cli_actor(),
            )  # fmt: skip
        except UnknownUser as exc:  # a typo never creates an admin
            raise CliError(f"{exc}; create users with 'patch-manager users add'") from None

    password, revoked = _with_database(args, work)
    print(f"new password for {args.user}: {password}")
    print(f"(every session of this user has ended, {revoked} API token(s) revoked;"
          " the password must be changed at the next login)")  # fmt: skip
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    async def work(db: Database) -> int:
        from storage import current_version

        return await db.run(current_version)

    version = _with_database(args, work)
    print(f"database schema at version {version}")
    return 0


def cmd_check_config(args: argparse.Namespace) -> int:
    conf_dir, _ = _dirs(args)
    host = None
    if args.host is not None:
        try:
            host, _ = normalise_name(args.host)
        except RegistrationError as exc:
            raise UsageError(f"--host: {exc.message}") from None
    for group in args.group:
        if not valid_group(group):
            raise UsageError(f"--group: {group!r} is not a valid group name")
    config = load(conf_dir)
    if host is not None:
        eff = effective_policy(config, host, args.group)
        print(f"effective polling policy of {host}:")
        for key, value in as_table(eff.policy).items():
            shown = list(value) if isinstance(value, tuple) else value
            print(f"  {key} = {json.dumps(shown)}  ({eff.origins[key]})")
        return 0
    print(f"configuration in {conf_dir} is valid; effective settings:")
    for section in ("server", "database", "logging", "agents", "polling", "supervision",
                    "discovery", "retention", "auth"):  # fmt: skip
        print(f"[{section}]")
        for key, value in as_table(getattr(config, section)).items():
            if section == "database" and key == "url" and value:
                value = "<set>"  # may hold a password
            shown = list(value) if isinstance(value, tuple) else value
            print(f"  {key} = {json.dumps(shown)}")
    groups, hosts = config.overrides.groups, config.overrides.hosts
    print(f"overrides: {len(groups)} group(s), {len(hosts)} host(s) in hosts.toml")
    return 0


def _renew_agent(args: argparse.Namespace, ca: CertificateAuthority) -> int:
    """Reissue an agent certificate with the same names (the old one stays valid until it
    expires or is revoked) and write the agent's files."""
    try:
        serial = int(args.serial.replace(":", ""), 16)
    except ValueError:
        raise CliError(f"{args.serial!r} is not a hexadecimal serial number") from None

    async def find(db: Database) -> StoredCertificate:
        found = [c for c in await db.run(list_certificates) if c.serial == serial]
        if not found or found[0].kind != "agent_server":
            raise CliError(f"no agent certificate with serial {serial:x} was issued by this CA")
        return found[0]

    old = _with_database(args, find)
    issued = ca.issue_agent(list(old.sans) or [old.subject])

    async def save(db: Database) -> None:
        entry = AuditEntry(
            audit_cli.cli_actor(),
            "certificate.issue",
            f"certificate:{issued.record.serial_hex}",
            after={"names": list(issued.record.sans), "reissue_of": f"{serial:x}"},
        )
        await record_certificates(db, [issued.record], entry)

    _with_database(args, save)
    directory = ca.write_agent_bundle(args.out / issued.record.subject, issued)
    print(f"reissued {serial:x} as {issued.record.serial_hex} for "
          f"{', '.join(issued.record.sans)}: {directory}/ (revoke the old one once the agent "
          "uses the new one)")  # fmt: skip
    return 0


def cmd_ca(args: argparse.Namespace) -> int:
    _, data_dir = _dirs(args)
    if args.ca_command == "export-root":
        sys.stdout.write(_open_ca(data_dir, args).root_pem)
        return 0
    if args.ca_command == "list":

        async def fetch(db: Database) -> list[StoredCertificate]:
            return await db.run(list_certificates)

        for cert in _with_database(args, fetch):
            print(f"{cert.serial:x}  {cert.kind:<14}  {cert.status:<7}  "
                  f"{cert.not_after:%Y-%m-%d}  {cert.subject}  {' '.join(cert.sans)}")  # fmt: skip
        return 0
    if args.ca_command == "init":
        config = _store(args).current
        names = [*config.server.hostnames, *config.server.ip_addresses]
        ca, created = CertificateAuthority.init(
            data_dir / "ca", web_names=names, passphrase=_passphrase(args)
        )

        async def save(db: Database) -> None:
            entry = AuditEntry(
                audit_cli.cli_actor(),
                "ca.init",
                f"ca:{ca.directory}",
                after={"created": [c.serial_hex for c in created]},
            )
            await record_certificates(db, created, entry if created else None)

        _with_database(args, save)
        print(f"CA ready in {ca.directory} ({len(created)} certificate(s) created)")
        return 0
    if args.ca_command == "issue-agent":
        ca = _open_ca(data_dir, args)
        groups = [list(args.names)] if args.san else [[name] for name in args.names]
        bundles = [ca.issue_agent(names) for names in groups]

        async def save_agent(db: Database) -> None:
            for issued in bundles:
                entry = AuditEntry(
                    audit_cli.cli_actor(),
                    "certificate.issue",
                    f"certificate:{issued.record.serial_hex}",
                    after={"names": list(issued.record.sans)},
                )
                await record_certificates(db, [issued.record], entry)

        _with_database(args, save_agent)
        for issued in bundles:
            directory = ca.write_agent_bundle(args.out / issued.record.subject, issued)
            print(f"issued serial {issued.record.serial_hex} for "
                  f"{', '.join(issued.record.sans)}: {directory}/")  # fmt: skip
        return 0
    if args.ca_command == "renew":
        ca = _open_ca(data_dir, args)
        if args.serial:
            return _renew_agent(args, ca)
        kinds = [k for k, wanted in ((CertKind.MANAGER_CLIENT, args.manager),
                                     (CertKind.WEB_SERVER, args.web)) if wanted]  # fmt: skip
        if not kinds:
            raise CliError("say what to renew: --manager, --web, both, or an agent's SERIAL")
        renewed = [ca.renew(kind) for kind in kinds]

        async def save_renewed(db: Database) -> None:
            for issued in renewed:
                entry = AuditEntry(
                    audit_cli.cli_actor(),
                    "certificate.renew",
                    f"certificate:{issued.record.serial_hex}",
                    after={"kind": issued.record.kind.value},
                )
                await record_certificates(db, [issued.record], entry)

        _with_database(args, save_renewed)
        for issued in renewed:
            print(f"renewed {issued.record.kind.value}: serial {issued.record.serial_hex} "
                  f"valid until {issued.record.not_after:%Y-%m-%d} (a running server picks it "
                  "up within the hour; the old one stays valid until it expires)")  # fmt: skip
        return 0
    if args.ca_command == "revoke":
        ca = _open_ca(data_dir, args)
        try:
            serial = int(args.serial.replace(":", ""), 16)
        except ValueError:
            raise CliError(f"{args.serial!r} is not a hexadecimal serial number") from None

        async def revoke(db: Database) -> int:
            entry = AuditEntry(
                audit_cli.cli_actor(), "certificate.revoke", f"certificate:{serial:x}"
            )
            await run_audited(db, entry, revoke_certificate, serial)
            revoked = await db.run(revoked_serials)
            await trio.to_thread.run_sync(ca.write_crl, revoked)
            return len(revoked)

        count = _with_database(args, revoke)
        print(f"revoked {serial:x}; {ca.crl_path} now lists {count} certificate(s)")
        return 0
    raise CliError(f"unknown ca action {args.ca_command}")


def cmd_simulate(args: argparse.Namespace) -> int:
    from simulator.enrol import EnrolmentFailed

    from .simulate import run_enrolled, run_simulator

    logs.configure(args.log_level or "info", args.log_format or "auto")
    _, data_dir = _dirs(args)
    if args.enrol is None:
        trio.run(lambda: run_simulator(args, data_dir))
        return 0
    try:
        trio.run(lambda: run_enrolled(args, data_dir))
    except EnrolmentFailed as exc:
        raise CliError(str(exc)) from None
    return 0


def cmd_sim_ctl(args: argparse.Namespace) -> int:
    from simulator import control

    _, data_dir = _dirs(args)
    path = args.control_socket or data_dir / "simulator.sock"
    try:
        payload = json.loads(args.request)
    except ValueError as exc:
        raise CliError(f"the request is not JSON: {exc}") from None
    try:
        answer = control.request(path, payload)
    except OSError as exc:
        raise CliError(f"cannot reach the simulator at {path}: {exc.strerror or exc}") from None
    print(json.dumps(answer, indent=2))
    return 0 if answer.get("ok") else EXIT_ERROR


def cmd_hosts(args: argparse.Namespace) -> int:
    config = _store(args).current

    async def work(db: Database) -> None:
        await hosts_cli.hosts_command(args, config, db)

    _with_database(args, work)
    return 0


def cmd_discover(args: argparse.Namespace) -> int:
    config = _store(args).current
    _, data_dir = _dirs(args)

    async def work(db: Database) -> None:
        await hosts_cli.discover_command(args, config, db, data_dir)

    _with_database(args, work)
    return 0


def cmd_enroll(args: argparse.Namespace) -> int:
    config = _store(args).current

    async def work(db: Database) -> None:
        await enrol_cli.enroll_command(args, config, db)

    _with_database(args, work)
    return 0


def cmd_tokens(args: argparse.Namespace) -> int:
    config = _store(args).current

    async def work(db: Database) -> None:
        await tokens_cli.tokens_command(args, config, db)

    _with_database(args, work)
    return 0


def cmd_users(args: argparse.Namespace) -> int:
    async def work(db: Database) -> None:
        await users_cli.users_command(args, db)

    _with_database(args, work)
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    _, data_dir = _dirs(args)
    if not os.environ.get(AUDIT_KEY_ENV) and not (data_dir / AUDIT_KEY_FILE).exists():
        # Never made here: a new key would only make every entry look edited.
        raise hosts_cli.CommandError(
            f"no audit key: {data_dir / AUDIT_KEY_FILE} is missing and {AUDIT_KEY_ENV} is not set"
        )

    async def work(db: Database) -> int:
        return await audit_cli.audit_command(args, db)

    code: int = _with_database(args, work)
    return code


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "audit": cmd_audit,
    "hosts": cmd_hosts,
    "tokens": cmd_tokens,
    "users": cmd_users,
    "enroll": cmd_enroll,
    "discover": cmd_discover,
    "simulate": cmd_simulate,
    "sim-ctl": cmd_sim_ctl,
    "serve": cmd_serve,
    "demo": cmd_demo,
    "reset-password": cmd_reset_password,
    "migrate": cmd_migrate,
    "check-config": cmd_check_config,
    "ca": cmd_ca,
}


_REPORTED = (
    ConfigError,
    CliError,
    CAError,
    StorageError,
    ScenarioError,
    hosts_cli.CommandError,
    ListenError,
    AgentListenError,
)


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for sub in exc.exceptions for leaf in _leaves(sub)]
    return [exc]


EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, as a shell reports a command killed by it


def _quiet_broken_pipe() -> int:
    """The reader went away (``ca list | head``): stop quietly. What is still buffered for
    stdout goes nowhere, so the interpreter's final flush raises nothing either."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return EXIT_BROKEN_PIPE


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        status = COMMANDS[args.command](args)
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's exit
        return status
    except KeyboardInterrupt:
        return 130
    except BaseException as exc:
        # Errors raised inside nurseries arrive grouped: report known ones as plain lines.
        leaves = _leaves(exc)
        if all(isinstance(leaf, BrokenPipeError) for leaf in leaves):
            return _quiet_broken_pipe()
        if not all(isinstance(leaf, _REPORTED) for leaf in leaves):
            raise
        for leaf in leaves:
            hint = ""
            if isinstance(leaf, AgentListenError):
                hint = "; choose other agent addresses with --base-address"
            print(f"patch-manager: {leaf}{hint}", file=sys.stderr)
        usage = all(isinstance(x, ConfigError | UsageError) for x in leaves)
        return EXIT_USAGE if usage else EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
