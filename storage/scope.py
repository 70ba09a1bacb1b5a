"""Host scope: which hosts a principal may see or act on, as a value every query can filter by.

The authorization layer (web) decides a principal's scope; storage only turns it into SQL, so
that every list of hosts, jobs, windows, history or report rows is filtered in the database with
one fragment (``scope_condition``) rather than after the fact in Python.
"""

from __future__ import annotations

from dataclasses import dataclass

from psycopg import sql


@dataclass(frozen=True)
class HostScope:
    """Every host (``all_hosts``), or the members of ``group_ids`` plus, when ``ungrouped``,
    the hosts that belong to no group. The empty scope sees nothing."""

    all_hosts: bool = False
    group_ids: frozenset[int] = frozenset()
    ungrouped: bool = False

    @classmethod
    def everything(cls) -> HostScope:
        return cls(all_hosts=True)

    def is_empty(self) -> bool:
        return not self.all_hosts and not self.group_ids and not self.ungrouped


def scope_condition(scope: HostScope, host_id: sql.Composable | str = "h.id") -> sql.Composed:
    """A boolean SQL expression that is true for the host ids ``scope`` admits.

    ``host_id`` is the column (or expression) holding the host id in the caller's query, e.g.
    ``"h.id"`` or ``"jh.host_id"``; a plain string is taken as SQL text, so pass only constants.
    """
    column = sql.SQL(host_id) if isinstance(host_id, str) else host_id
    if scope.all_hosts:
        return sql.Composed([sql.SQL("TRUE")])
    parts: list[sql.Composable] = []
    if scope.group_ids:
        parts.append(
            sql.SQL(
                "EXISTS (SELECT 1 FROM host_groups sg"
                " WHERE sg.host_id = {} AND sg.group_id = ANY({}))"
            ).format(column, sql.Literal(sorted(scope.group_ids)))
        )
    if scope.ungrouped:
        parts.append(
            sql.SQL("NOT EXISTS (SELECT 1 FROM host_groups sg WHERE sg.host_id = {})").format(
                column
            )
        )
    if not parts:
        return sql.Composed([sql.SQL("FALSE")])
    return sql.Composed([sql.SQL("("), sql.SQL(" OR ").join(parts), sql.SQL(")")])


def role_scope(role: str, group_ids: frozenset[int], *, operators_see_ungrouped: bool) -> HostScope:
    """The hosts a user of ``role`` sees (no API token): admins every host; operators and
    auditors their groups, and ungrouped hosts for OPERATORS only when
    ``operators_see_ungrouped``; any other role nothing. ``web.authz.scope_of`` uses it for
    every session user; the notifier for every subscriber."""
    if role == "admin":
        return HostScope.everything()
    if role in ("operator", "auditor"):
        ungrouped = operators_see_ungrouped and role == "operator"
        return HostScope(group_ids=group_ids, ungrouped=ungrouped)
    return HostScope()
