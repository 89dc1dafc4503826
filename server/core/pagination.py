"""One way to page every list endpoint: `limit`, `order`, and either a cursor (`after`, alias `cursor`) or `offset`.

Rows are ordered by their table's integer primary key (`pk`), which follows insertion order, so a cursor is a
keyset condition (`pk < cursor` when newest first) and pages stay stable while rows are added. The public id
given as `after` is looked up inside the same filtered query, so another user's id is simply unknown.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Generic, Literal, Protocol, TypeVar

from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from server.core.errors import invalid_request

DEFAULT_LIMIT = 20
MAX_LIMIT = 100


class HasPublicId(Protocol):
    id: str


Row = TypeVar("Row", bound=HasPublicId)


@dataclass(frozen=True)
class PageRequest:
    limit: int = DEFAULT_LIMIT
    order: Literal["asc", "desc"] = "desc"
    after: str | None = None
    offset: int | None = None

    @classmethod
    def parse(
        cls, *, limit: int | None, order: str, after: str = "", cursor: str = "", offset: int | None = None
    ) -> PageRequest:
        """Validates the query parameters (proto fields: unset strings are "", unset optionals None)."""
        if limit is None:
            limit = DEFAULT_LIMIT
        elif not 1 <= limit <= MAX_LIMIT:
            raise invalid_request(f"'limit' must be between 1 and {MAX_LIMIT}", param="limit")
        order = order or "desc"
        if order not in ("asc", "desc"):
            raise invalid_request("'order' must be 'asc' or 'desc'", param="order")
        if after and cursor and after != cursor:
            raise invalid_request("Give 'after' or its alias 'cursor', not both", param="after")
        after = after or cursor
        if after and offset:
            raise invalid_request("Give either a cursor ('after') or 'offset', not both", param="offset")
        return cls(limit=limit, order=order, after=after or None, offset=offset or None)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Page(Generic[Row]):
    rows: Sequence[Row]
    has_more: bool
    total: int

    @property
    def first_id(self) -> str | None:
        return self.rows[0].id if self.rows else None

    @property
    def last_id(self) -> str | None:
        return self.rows[-1].id if self.rows else None


async def paginate(
    session: AsyncSession,
    statement: Select[tuple[Row]],
    *,
    pk: InstrumentedAttribute[int],
    public_id: InstrumentedAttribute[str],
    page: PageRequest,
    count: bool = True,
) -> Page[Row]:
    """Runs `statement` (already filtered to the caller's rows) for one page.

    `total` counts every row the filters match, regardless of the cursor. An `after` id that the filtered
    query does not contain is a 400 naming `after`.
    """
    total = 0
    if count:
        total = await session.scalar(select(func.count()).select_from(statement.order_by(None).subquery())) or 0
    paged = statement
    if page.after is not None:
        cursor = await session.scalar(statement.with_only_columns(pk).where(public_id == page.after).order_by(None))
        if cursor is None:
            raise invalid_request(f"'after' names no item of this list: {page.after}", param="after")
        paged = paged.where(pk > cursor if page.order == "asc" else pk < cursor)
    paged = paged.order_by(pk.asc() if page.order == "asc" else pk.desc()).limit(page.limit + 1)
    if page.offset:
        paged = paged.offset(page.offset)
    rows = list((await session.scalars(paged)).all())
    return Page(rows=rows[: page.limit], has_more=len(rows) > page.limit, total=total)


def list_fields(page: Page[Any]) -> dict[str, Any]:
    """The list envelope's fields besides `data`: `total` is the original's name, `total_count` the seed's."""
    fields: dict[str, Any] = {"object": "list", "has_more": page.has_more, "total": page.total,
                              "total_count": page.total}
    if page.first_id is not None:
        fields["first_id"] = page.first_id
        fields["last_id"] = page.last_id
    return fields
