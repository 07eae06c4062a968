"""The naive baseline of the intake benchmark: a FastAPI endpoint that does nothing.

Same server (uvicorn, h11, asyncio), same framework, same kind of handler (a sync `def`, run in
Starlette's thread pool like the service's order endpoints), same request bodies and the same
load generator as the real intake; it only parses the JSON into a pydantic model and answers 201.
Its rate is the ceiling of HTTP + FastAPI on this machine before any order is checked.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, status
from pydantic import BaseModel

app = FastAPI()


class Submission(BaseModel):
    order: dict[str, Any]
    signature: str


class Accepted(BaseModel):
    accepted: bool
    owner: str | None


@app.get("/health")
def health() -> dict[str, str]:
    return {"status": "ok"}


@app.post("/offers", status_code=status.HTTP_201_CREATED, response_model=Accepted)
def offers(body: Submission) -> Accepted:
    return Accepted(accepted=True, owner=body.order.get("provider"))


@app.post("/requests", status_code=status.HTTP_201_CREATED, response_model=Accepted)
def requests(body: Submission) -> Accepted:
    return Accepted(accepted=True, owner=body.order.get("trainer"))
