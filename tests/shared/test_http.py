"""shared.http on a small app: strict requests and a 405 that names every method."""

from __future__ import annotations

import httpx
from fastapi import APIRouter, Depends, FastAPI
from pydantic import BaseModel

from shared.http import IsoDate, IsoDatetime, install_error_handlers, strict_request
from tests.support import http_client


class Note(BaseModel):
    text: str


class Money(BaseModel):
    mrr: int


def app() -> FastAPI:
    application = FastAPI()
    install_error_handlers(application)
    router = APIRouter(dependencies=[Depends(strict_request)])

    @router.get("/items")
    async def items(status: str | None = None) -> dict[str, str | None]:
        return {"status": status}

    @router.post("/items")
    async def add(note: Note) -> Note:
        return note

    @router.delete("/items/{item}")
    async def remove(item: str) -> None:
        return None

    @router.put("/items/{item}")
    async def replace(item: str, note: Note) -> Note:
        return note

    application.include_router(router)
    return application


async def test_strict_request_and_allow_header() -> None:
    transport = httpx.ASGITransport(app=app())
    async with http_client(transport=transport, base_url="http://t") as client:
        assert (await client.get("/items", params={"status": "open"})).status_code == 200
        typo = await client.get("/items", params={"stauts": "open"})
        assert typo.status_code == 422 and typo.json()["detail"][0]["loc"] == ["query", "stauts"]
        twice = await client.get("/items?status=a&status=b")
        assert twice.status_code == 422 and "more than once" in twice.text
        nul_query = await client.get("/items", params={"status": "a\x00b"})
        assert nul_query.status_code == 422 and "NUL" in nul_query.text
        nul_body = await client.post("/items", json={"text": "a\x00b"})
        assert nul_body.json()["detail"][0]["loc"] == ["body", "text"]
        assert (await client.post("/items", json={"text": "fine"})).json() == {"text": "fine"}
        wrong = await client.patch("/items/1", json={"text": "x"})
        assert wrong.status_code == 405
        assert wrong.headers["Allow"] == "DELETE, PUT"


async def test_iso_dates_out_of_range_are_a_422_naming_the_field() -> None:
    application = FastAPI()

    @application.get("/day")
    async def day(on: IsoDate, at: IsoDatetime | None = None) -> dict[str, str]:
        return {"on": on.isoformat(), "at": at.isoformat() if at else ""}

    transport = httpx.ASGITransport(app=application)
    async with http_client(transport=transport, base_url="http://t") as client:
        ok = await client.get("/day", params={"on": "2026-03-01", "at": "2026-03-01T10:00:00Z"})
        assert ok.json() == {"on": "2026-03-01", "at": "2026-03-01T10:00:00+00:00"}
        for params, field in (
            ({"on": "0001-01-01"}, "on"),
            ({"on": "9999-12-31"}, "on"),
            ({"on": "2026-02-30"}, "on"),
            ({"on": "2026-03-01", "at": "0001-01-01T00:00:00+01:00"}, "at"),
        ):
            refused = await client.get("/day", params=params)
            assert refused.status_code == 422, params
            assert refused.json()["detail"][0]["loc"] == ["query", field]


async def test_a_422_echoing_an_infinite_number_is_still_a_422() -> None:
    application = FastAPI()
    install_error_handlers(application)

    @application.post("/money")
    async def money(body: Money) -> Money:
        return body

    transport = httpx.ASGITransport(app=application)
    async with http_client(transport=transport, base_url="http://t") as client:
        for raw in (b'{"mrr": 1e400}', b'{"mrr": -1e400}', b'{"mrr": NaN}'):
            r = await client.post(
                "/money", content=raw, headers={"content-type": "application/json"}
            )
            assert r.status_code == 422, (raw, r.text)
            assert r.json()["detail"][0]["loc"] == ["body", "mrr"]
