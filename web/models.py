"""One typed model per shape of the JSON API (requests, query strings and responses).

pydantic v2 models: validation reports every field at once, the 422 envelope's per-field
messages come from the same errors, and the OpenAPI 3.1 document (``web.openapi``) is generated
from these classes' JSON Schema (2020-12, what OpenAPI 3.1 uses). The HTML forms validate with
the same models (``web.models_io``), so a page and the API show the same message for a field.

Reply models describe the records of ``storage`` (frozen dataclasses) directly: a response
is serialised through its model, so the document cannot drift from what is sent.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import typing
import zoneinfo
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    create_model,
    field_validator,
    model_validator,
)

from maintenance import Recurrence, ShortMonth, WindowRule
from storage import (
    BlackoutRow,
    FleetCounts,
    GroupItem,
    HostEntry,
    HostRow,
    HostState,
    JobHostRow,
    JobRow,
    PatchItem,
    SessionItem,
    Transition,
    UserItem,
    WindowRow,
    package_name_problem,
    package_version_problem,
)

MAX_ID = 2**63 - 1  # PostgreSQL bigint: a larger id cannot exist
MAX_SELECTION = 100_000  # host ids in one request

Id = Annotated[int, Field(ge=1, le=MAX_ID)]
GroupName = Annotated[
    str,
    StringConstraints(strip_whitespace=True, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"),
]
JobKind = Literal["patch", "install", "update", "remove", "reboot"]
HEALTH_STATES = ("pending", "healthy", "degraded", "unreachable")


class FieldErrors(ValueError):
    """Raised by a model's cross-field check: ``errors`` maps field name → message."""

    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))
        self.errors = errors


def storable(value: Any) -> Any:
    """Text PostgreSQL can store: no NUL character (pydantic refuses unpaired surrogates
    already); checked in every string of every request, lists included."""
    items = value if isinstance(value, list) else [value]
    if any(isinstance(item, str) and "\x00" in item for item in items):
        raise ValueError("must not contain the NUL character")
    return value


class Body(BaseModel):
    """A request body: unknown fields are refused (a typo must not be silently ignored)."""

    model_config = ConfigDict(extra="forbid")

    @field_validator("*")
    @classmethod
    def _storable(cls, value: Any) -> Any:
        return storable(value)

    @classmethod
    def raw_problems(cls, data: dict[str, Any]) -> dict[str, str]:
        """Cross-field problems visible on the raw input, reported together with the field
        errors (the typed cross-field check only runs once every field is valid)."""
        return {}


class Query(BaseModel):
    """A query string: unknown parameters are ignored, empty ones mean "not given"."""

    model_config = ConfigDict(extra="ignore")

    @field_validator("*")
    @classmethod
    def _storable(cls, value: Any) -> Any:
        return storable(value)


# -- hosts and groups ---------------------------------------------------------------------------


class HostCreate(Body):
    name: str = Field(max_length=253, description="FQDN or IP address")
    display_name: str = Field("", max_length=100)
    groups: list[GroupName] = Field(default_factory=list, max_length=64)
    port: int | None = Field(None, ge=1, le=65535)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("enter an FQDN or an IP address")
        return value.strip()


class HostIds(Body):
    host_ids: list[Id] = Field(min_length=1, max_length=MAX_SELECTION)


class GroupMembership(HostIds):
    member: bool = True


class GroupCreate(Body):
    name: GroupName
    description: str = Field("", max_length=500)


class GroupRename(Body):
    name: GroupName


class HostQuery(Query):
    group: str = Field("", max_length=64)
    health: Literal["", "pending", "healthy", "degraded", "unreachable"] = Field(
        "", description="the stored health of the last poll"
    )
    condition: Literal[
        "", "unknown", "stale", "failing", "halted", "paused", "healthy", "degraded", "unreachable"
    ] = Field("", description="what the data supports as of now (as every page shows)")
    os: str = Field("", max_length=64)
    min_pending: int = Field(0, ge=0, le=100_000)
    reboot: Literal["", "yes", "no", "true", "false"] = ""
    q: str = Field("", max_length=200, description="literal text in name, address or hostname")
    sort: Literal["name", "health", "condition", "os", "pending", "security", "last_seen"] = "name"
    order: Literal["asc", "desc"] = "asc"
    limit: int = Field(50, ge=1, le=500)
    page: int = Field(1, ge=1, le=1_000_000)
    offset: int | None = Field(None, ge=0, le=10_000_000)


class PackageQuery(Query):
    q: str = Field("", max_length=200)


# -- discovery ----------------------------------------------------------------------------------


class DiscoveryStart(Body):
    cidr: str = Field(min_length=1, max_length=64, examples=["10.0.0.0/24"])


class Addresses(Body):
    addresses: list[Annotated[str, Field(min_length=1, max_length=64)]] = Field(
        min_length=1, max_length=4096
    )


# -- jobs ---------------------------------------------------------------------------------------


def _check_name(value: str) -> str:
    problem = package_name_problem(value)
    if problem:
        raise ValueError(problem)
    return value


def _check_version(value: str) -> str:
    problem = package_version_problem(value)
    if problem:
        raise ValueError(problem)
    return value


PackageName = Annotated[str, Field(max_length=256, description="the agent's package-name rule")]


class PackageSpec(Body):
    name: PackageName
    version: str | None = Field(None, max_length=256)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return _check_name(value)

    @field_validator("version")
    @classmethod
    def _version(cls, value: str | None) -> str | None:
        return None if value is None else _check_version(value)


class HostSelection(Body):
    """Which hosts: an explicit list, a group, or a literal text filter (in that order)."""

    host_ids: list[Id] = Field(default_factory=list, max_length=MAX_SELECTION)
    group: str = Field("", max_length=64)
    filter: str = Field("", max_length=200, description="literal text, not a pattern")
    all_hosts: bool = Field(
        False, description="confirm a selection that matches every host of the fleet"
    )


def _no_hosts_chosen(data: dict[str, Any]) -> bool:
    return not any(data.get(k) for k in ("host_ids", "group", "filter", "all_hosts"))


class JobCreate(HostSelection):
    kind: JobKind = "patch"
    schedule: Literal["window", "now"] = "window"
    selection: Literal["all", "security", "list"] = "all"
    packages: list[PackageName | PackageSpec] = Field(default_factory=list, max_length=1000)
    allow_reboot: bool = False
    reboot_delay_s: int = Field(0, ge=0, le=86_400)
    batch_size: int | None = Field(None, ge=1, le=MAX_SELECTION)
    batch_percent: int | None = Field(None, ge=1, le=100)
    failure_threshold: int | None = Field(None, ge=0, le=MAX_SELECTION)
    canary: bool = False
    plan_digest: str = Field(
        "",
        max_length=64,
        description="the digest of the plan you confirmed (POST /api/v1/jobs/plan): the job is"
        " refused (409) when the plan is another now; empty: not checked",
    )

    @field_validator("packages")
    @classmethod
    def _packages(cls, value: list[str | PackageSpec]) -> list[str | PackageSpec]:
        for item in value:
            if isinstance(item, str):
                _check_name(item)
        return value

    @classmethod
    def raw_problems(cls, data: dict[str, Any]) -> dict[str, str]:
        if _no_hosts_chosen(data):
            return {"hosts": "choose hosts: a list, a group or a filter"}
        return {}

    @model_validator(mode="after")
    def _consistent(self) -> JobCreate:
        errors: dict[str, str] = {}
        if _no_hosts_chosen(self.__dict__):
            errors["hosts"] = "choose hosts: a list, a group or a filter"
        needs_packages = self.kind in ("install", "update", "remove") or self.selection == "list"
        if needs_packages and not self.packages:
            errors["packages"] = "name at least one package"
        if self.kind in ("update", "remove") and len(self.packages) > 1:
            errors["packages"] = "update and remove take one package per job"
        if errors:
            raise FieldErrors(errors)
        return self

    def package_values(self) -> tuple[Any, ...]:
        """Packages as stored in a job: names, or ``{"name", "version"}`` objects."""
        return tuple(
            p if isinstance(p, str) else p.model_dump(exclude_none=True) for p in self.packages
        )


class DeployPreview(JobCreate):
    """A draft job: which hosts it would reach and their pending patches."""


class Rollback(Body):
    host_ids: list[Id] | None = Field(None, max_length=MAX_SELECTION)


class JobsQuery(Query):
    status: Literal["", "queued", "running", "succeeded", "failed", "cancelled"] = ""


# -- windows, blackouts, calendar ---------------------------------------------------------------


@functools.cache
def _iana_zones() -> frozenset[str]:
    """IANA zone names (they start with a capital: "localtime" and "posixrules" are files)."""
    return frozenset(z for z in zoneinfo.available_timezones() if z[:1].isupper())


class WindowDraft(Body):
    name: str = Field("", max_length=100)
    host_id: Id | None = None
    group_id: Id | None = None
    recurrence: Literal["once", "daily", "weekly", "monthly_day", "monthly_nth"] = "weekly"
    start_date: dt.date = Field(default_factory=dt.date.today)
    start_time: dt.time = dt.time(2, 0)
    duration_minutes: int = Field(120, ge=1, le=10_080)
    timezone: str = Field("UTC", max_length=64, examples=["Europe/Berlin"])
    weekdays: list[Annotated[int, Field(ge=0, le=6)]] = Field(default_factory=list, max_length=7)
    day_of_month: int = Field(1, ge=1, le=31)
    short_month: Literal["clamp", "skip"] = "clamp"
    nth: int = Field(1, ge=-1, le=5, description="1 to 5, or -1 for the last (monthly_nth)")
    until: dt.date | None = Field(None, le=dt.date(9999, 12, 30))
    enabled: bool = True
    auto_apply: Literal["none", "all", "security"] = "none"
    allow_reboot: bool = False

    @field_validator("start_date")
    @classmethod
    def _start(cls, value: dt.date) -> dt.date:
        if value.year >= 9999:
            raise ValueError("a date before the year 9999")
        return value

    def rule(self) -> WindowRule:
        return WindowRule(
            Recurrence(self.recurrence),
            self.start_date,
            self.start_time.replace(tzinfo=None),
            dt.timedelta(minutes=self.duration_minutes),
            self.timezone,
            frozenset(self.weekdays),
            self.day_of_month,
            ShortMonth(self.short_month),
            self.nth,
            self.until,
        )

    def problems(self) -> dict[str, str]:
        found = {
            "duration_minutes" if key == "duration" else key: message
            for key, message in self.rule().problems().items()
        }
        # zoneinfo also opens the system's "localtime" (whatever the machine is set to) and
        # other files of the zone directory; a window's zone must mean the same everywhere.
        if "timezone" not in found and self.timezone not in _iana_zones():
            found["timezone"] = f"unknown IANA time zone {self.timezone!r} (e.g. Europe/Berlin)"
        return found

    @model_validator(mode="after")
    def _usable(self) -> WindowDraft:
        if errors := self.problems():
            raise FieldErrors(errors)
        return self

    def columns(self) -> dict[str, Any]:
        """Column values for ``storage.save_window``."""
        values = self.model_dump()
        values["weekdays"] = sorted(set(self.weekdays))
        values["start_time"] = self.start_time.replace(tzinfo=None)
        return values


class Window(WindowDraft):
    """A window applies to exactly one host or one group."""

    @classmethod
    def raw_problems(cls, data: dict[str, Any]) -> dict[str, str]:
        if (data.get("host_id") in (None, "")) == (data.get("group_id") in (None, "")):
            return {"target": "choose either a host or a group"}
        return {}

    @model_validator(mode="after")
    def _target(self) -> Window:
        if (self.host_id is None) == (self.group_id is None):
            raise FieldErrors({"target": "choose either a host or a group"})
        return self


class BlackoutCreate(Body):
    """A blackout period. The one time-zone rule (pages and API): a time without a zone is
    UTC; a time with a zone keeps it."""

    name: str = Field("", max_length=100)
    starts_at: dt.datetime
    ends_at: dt.datetime

    @field_validator("starts_at", "ends_at")
    @classmethod
    def _utc_unless_zoned(cls, value: dt.datetime) -> dt.datetime:
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        try:
            return value.astimezone(dt.UTC)
        except OverflowError:
            raise ValueError("a date-time between the years 1 and 9999") from None

    @model_validator(mode="after")
    def _ordered(self) -> BlackoutCreate:
        if self.ends_at <= self.starts_at:
            raise FieldErrors({"ends_at": "must be after starts_at"})
        return self


class CalendarQuery(Query):
    days: int = Field(30, ge=1, le=92)


# -- responses ----------------------------------------------------------------------------------


def record_model(record: type[Any], name: str, **extra: Any) -> type[BaseModel]:
    """A response model with the fields of a storage record (a dataclass) plus ``extra``."""
    hints = typing.get_type_hints(record)
    fields: dict[str, Any] = {
        f.name: (hints[f.name], ...) for f in dataclasses.fields(record) if f.init
    }
    fields.update(extra)
    return create_model(name, **fields)


class Reply(BaseModel):
    pass


class ErrorBody(BaseModel):
    code: str
    message: str
    details: dict[str, Any] | None = Field(
        description='for validation errors {"fields": {field: message}}'
    )
    request_id: str


class Error(Reply):
    error: ErrorBody


class Health(Reply):
    model_config = ConfigDict(extra="allow")
    status: Literal["ok", "degraded"]


class Policy(Reply):
    values: dict[str, Any]
    origins: dict[str, str]


class HostList(Reply):
    hosts: list[HostEntry]
    total: int
    limit: int
    offset: int


HostOut = record_model(HostRow, "Host")
HostDetail = record_model(
    HostRow,
    "HostDetail",
    state=(HostState | None, ...),
    live=(Any, None),
    policy=(Policy | None, ...),
)


class Refreshing(Reply):
    refreshing: int


class Patches(Reply):
    patches: list[PatchItem]


class Package(Reply):
    name: str
    version: str


class Packages(Reply):
    packages: list[Package]
    total: int


class History(Reply):
    transitions: list[Transition]


class Actors(Reply):
    actors: list[Any]


FleetSummary = record_model(FleetCounts, "FleetSummary")
Group = record_model(GroupItem, "Group")


class Groups(Reply):
    groups: list[GroupItem]


class GroupRenamed(Reply):
    id: int
    name: str


class Changed(Reply):
    changed: int


class Scan(Reply):
    scan_id: int
    progress: Any
    found: list[Any]


class ScanCancelled(Reply):
    cancelled: bool


class Registered(Reply):
    registered: list[HostRow]


class JobCreated(Reply):
    job_id: int
    hosts: int


JobListItem = record_model(JobRow, "JobListItem", hosts=(dict[str, int], ...))


class JobPlanChange(Reply):
    name: str
    from_version: str = Field(description="installed at the last poll before the job")
    to_version: str = Field(description="what the plan brings it to")


class JobPlanHost(Reply):
    host_id: int
    batch: int
    skip: str = Field(
        description="PAUSED or NO_WINDOW (the row starts skipped), NOTHING_PENDING (the row"
        " starts succeeded: nothing to do), or empty (it runs)"
    )
    reason: str
    reboot: str
    window_start: dt.datetime | None = Field(description="the window occurrence planned")
    changes: list[JobPlanChange]


class JobPlan(Reply):
    """The plan the job was created from (what the Deploy page or POST /jobs/plan showed),
    for the hosts the caller may see; compare with each row's packages_before/after."""

    hosts: list[JobPlanHost]


JobDetail = record_model(
    JobRow,
    "JobDetail",
    rows=(list[JobHostRow], ...),
    plan=(JobPlan | None, Field(description="the stored plan; null for jobs without one")),
)


class Jobs(Reply):
    jobs: list[JobListItem]  # type: ignore[valid-type]


class RollbackCreated(Reply):
    job_id: int


class JobsCancelled(Reply):
    cancelled: int


class Retrying(Reply):
    retrying: int


class PendingPatch(Reply):
    name: str
    severity: str
    hosts: int
    requires_reboot: bool


class Preview(Reply):
    hosts: int = Field(description="how many hosts the selection resolves to now")
    all_hosts: bool = Field(description="the selection matches every host of the fleet")
    patches: list[PendingPatch]


class PlanChange(Reply):
    name: str
    from_version: str = Field(description="installed now (at the last poll)")
    to_version: str = Field(description="what the job brings it to")
    severity: str
    requires_reboot: bool


class PlanHost(Reply):
    host_id: int
    name: str
    address: str
    batch: int
    changes: list[PlanChange]
    reboot: str = Field(description='"reboots", "needs a reboot (not allowed: …)" or ""')
    skip: str = Field(
        description="PAUSED or NO_WINDOW (its row starts skipped) or NOTHING_PENDING (its row"
        " starts succeeded): no request is sent"
    )
    reason: str
    window_start: dt.datetime | None = Field(description="the window occurrence it runs in")
    window_end: dt.datetime | None


class PlanBatch(Reply):
    number: int
    hosts: int
    runs: int = Field(description="hosts of the batch that are not skipped")
    starts: dt.datetime | None = Field(description="the earliest window of its hosts")


class DeployPlan(Reply):
    """What a job would do now: the same plan ``POST /api/v1/jobs`` stores."""

    hosts_total: int
    all_hosts: bool = Field(description="the selection matches every host of the fleet")
    changes: int
    reboots: int
    skipped: int
    predicted_status: str = Field(
        description="the job's final status if every host that runs succeeds (hosts with"
        " nothing to do count neither way)"
    )
    digest: str = Field(description="pass as plan_digest to POST /api/v1/jobs to confirm it")
    hosts: list[PlanHost]
    batches: list[PlanBatch]


class Windows(Reply):
    windows: list[WindowRow]


class Created(Reply):
    id: int


class Occurrence(Reply):
    start: dt.datetime
    end: dt.datetime


class Occurrences(Reply):
    occurrences: list[Occurrence]
    problems: dict[str, str] = Field(
        description="field → message for a draft that cannot be saved yet (then no occurrences)"
    )
    text: str = Field(description='the rule in words, e.g. "every Tue and Thu 22:00-02:00 UTC"')


class CalendarEntry(Reply):
    window_id: int
    name: str
    target: str
    start: str = Field(json_schema_extra={"format": "date-time"})
    end: str = Field(json_schema_extra={"format": "date-time"})
    auto_apply: str


class Calendar(Reply):
    entries: list[CalendarEntry]


class Blackouts(Reply):
    blackouts: list[BlackoutRow]


class Document(Reply):
    model_config = ConfigDict(extra="allow")
    openapi: str


# -- users --------------------------------------------------------------------------------------

UserName = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True, to_lower=True, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
    ),
    Field(description="letters, digits, '.', '_' or '-'; unique regardless of case"),
]
Role = Literal["admin", "operator", "auditor"]


class UserCreate(Body):
    username: UserName
    role: Role
    group_ids: list[Id] = Field(default_factory=list, max_length=1000)


class UserUpdate(Body):
    role: Role | None = None
    state: Literal["active", "disabled"] | None = None
    group_ids: list[Id] | None = Field(None, max_length=1000)


class PasswordChange(Body):
    current_password: str = Field(max_length=1024)
    new_password: str = Field(max_length=1024)


UserOut = record_model(UserItem, "User")


class Users(Reply):
    users: list[UserItem]


class UserCreated(Reply):
    user: UserItem
    password: str = Field(description="one-time password; must be changed at the first login")


class PasswordReset(Reply):
    password: str = Field(description="one-time password; must be changed at the next login")


class Sessions(Reply):
    sessions: list[SessionItem]


class SessionsRevoked(Reply):
    revoked: int
