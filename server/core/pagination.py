"""One way to page every list endpoint: `limit`, `order`, and either a cursor (`after`, alias `cursor`) or `offset`.

Rows are ordered by their table's integer primary key (`pk`), which follows insertion order, so a cursor is a
keyset condition (`pk < cursor` when newest first) and pages stay stable while rows are added. The public id
given as `after` is looked up inside the same filtered query, so another user's id is simply unknown.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

from google.protobuf.message import Message
from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from server.core.errors import invalid_request

DEFAULT_LIMIT = 20
MAX_LIMIT = 100


Row = TypeVar("Row")


@dataclass(frozen=True)
class PageRequest:
    limit: int = DEFAULT_LIMIT
    order: Literal["asc", "desc"] = "desc"
    after: str | None = None
    offset: int | None = None

    @classmethod
    def parse(
        cls, *, limit: int | None, order: str, after: str = "", cursor: str = "", offset: int | None = None,
        default_order: Literal["asc", "desc"] = "desc",
    ) -> PageRequest:
        """Validates the query parameters (proto fields: unset strings are "", unset optionals None)."""
        if limit is None:
            limit = DEFAULT_LIMIT
        elif not 1 <= limit <= MAX_LIMIT:
            raise invalid_request(f"'limit' must be between 1 and {MAX_LIMIT}", param="limit")
        order = order or default_order
        if order not in ("asc", "desc"):
            raise invalid_request("'order' must be 'asc' or 'desc'", param="order")
        if after and cursor and after != cursor:
            raise invalid_request("Give 'after' or its alias 'cursor', not both", param="after")
        after = after or cursor
        if after and offset:
            raise invalid_request("Give either a cursor ('after') or 'offset', not both", param="offset")
        return cls(limit=limit, order=order, after=after or None, offset=offset or None)  # type: ignore[arg-type]


    @classmethod
    def from_message(cls, request: Message, default_order: Literal["asc", "desc"] = "desc") -> PageRequest:
        """From a List RPC's request message: `optional uint32 limit`, `string order`, `string after`, and
        optionally `string cursor` and `optional uint32 offset` (fields a message lacks count as unset)."""
        fields = request.DESCRIPTOR.fields_by_name

        def optional(name: str) -> int | None:
            return getattr(request, name) if name in fields and request.HasField(name) else None

        return cls.parse(
            limit=optional("limit"),
            order=request.order,  # type: ignore[attr-defined]
            after=request.after,  # type: ignore[attr-defined]
            cursor=request.cursor if "cursor" in fields else "",  # type: ignore[attr-defined]
            offset=optional("offset"),
            default_order=default_order,
        )


@dataclass(frozen=True)
class Page(Generic[Row]):
    rows: Sequence[Row]
    has_more: bool
    total: int
    first_id: str | None
    last_id: str | None


async def paginate(
    session: AsyncSession,
    statement: Select[Row],
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
    shown = rows[: page.limit]
    ids = [getattr(row, public_id.key) for row in shown[:1] + shown[-1:]]
    return Page(rows=shown, has_more=len(rows) > page.limit, total=total,
                first_id=ids[0] if ids else None, last_id=ids[-1] if ids else None)


def list_fields(page: Page[Any]) -> dict[str, Any]:
    """The list envelope's fields besides `data`: `total` is the original's name, `total_count` the seed's."""
    fields: dict[str, Any] = {"object": "list", "has_more": page.has_more, "total": page.total,
                              "total_count": page.total}
    if page.first_id is not None:
        fields["first_id"] = page.first_id
        fields["last_id"] = page.last_id
    return fields
