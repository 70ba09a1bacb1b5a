"""Ids in URL paths: every ``{name:int}`` route parameter is a database id (PostgreSQL
``bigint``), so the ``int`` convertor is replaced by one that refuses what no row can have.

Starlette's own ``int`` convertor matches any run of digits and calls ``int()``, which raises
``ValueError`` past 4,300 digits (a 500). Ours also matches any run of digits (so a long one
still reaches the route), but a value beyond ``bigint`` raises ``IdOutOfRange``: a 422 envelope
in the API, an error page on pages, before any handler runs (the router runs inside the app's
exception handlers). ``register()`` must run before routes are built; ``web.app`` calls it at
import and again in ``create_app``.
"""

from __future__ import annotations

from starlette.convertors import Convertor, register_url_convertor

from .handle import InvalidInput

MAX_ID = 2**63 - 1
_MAX_DIGITS = len(str(MAX_ID))


class IdOutOfRange(InvalidInput):
    """422: a path id no row can have (beyond PostgreSQL's bigint)."""


class IdConvertor(Convertor[int]):
    regex = "[0-9]+"

    def convert(self, value: str) -> int:
        digits = value.lstrip("0") or "0"
        if len(digits) > _MAX_DIGITS or int(digits) > MAX_ID:
            raise IdOutOfRange("id", f"ids in paths are 0 … {MAX_ID}")
        return int(digits)

    def to_string(self, value: int) -> str:
        if not 0 <= value <= MAX_ID:
            raise ValueError(f"id out of range: {value}")
        return str(value)


def register() -> None:
    register_url_convertor("int", IdConvertor())
