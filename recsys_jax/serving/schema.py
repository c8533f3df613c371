"""The JSON shapes of the HTTP API as pydantic models: what /docs and /openapi.json describe.

Validation of a request body is `RecommendService`'s (so messages and status codes are the
same for every transport); these models document the shapes and check the examples.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, RootModel
from pydantic.json_schema import models_json_schema

from recsys_jax.serving.requests import MAX_HISTORY


class RecommendRequest(BaseModel):
    """One user's request."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={"examples": [{"history": ["B004756YJA", "B004ZT0SSG"], "k": 5}]},
    )
    history: list[str | int] = Field(
        min_length=1,
        max_length=MAX_HISTORY,
        description="items the user interacted with, oldest first: original ids (e.g. ASINs), "
        "dataset item ids or exact titles",
    )
    k: int = Field(
        default=10,
        ge=1,
        description="how many items to return; at most the bundle's beam width and the "
        "catalog items left (default min(10, beam))",
    )
    exclude_history: bool = Field(
        default=True, description="never recommend an item of the history"
    )


class BatchRequest(BaseModel):
    """Several users' requests in one body (at most the server's --max-requests)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    requests: list[RecommendRequest] = Field(min_length=1)


class RecommendBody(RootModel[RecommendRequest | BatchRequest]):
    """The body of POST /recommend: one request, or {"requests": [...]}."""


class Item(BaseModel):
    id: str = Field(description="the item's original id (e.g. an ASIN) or dataset id")
    title: str
    score: float = Field(description="the beam's log-probability of the item's tokens")


class Recommendation(BaseModel):
    items: list[Item] = Field(description="best first; fewer than k when the beam finishes early")


class BatchRecommendation(BaseModel):
    results: list[Recommendation] = Field(description="in request order")


class RecommendAnswer(RootModel[Recommendation | BatchRecommendation]):
    """The answer of POST /recommend: `items` for one request, `results` for a batch."""


class ErrorAnswer(BaseModel):
    error: str = Field(description="what is wrong and what to do")


class BundleInfo(BaseModel):
    created: str | None = None
    dtype: str | None = None
    recsys_jax_version: str | None = None
    jax_version: str | None = None


class Health(BaseModel):
    status: str
    ready: bool = Field(description="whether the warm-up compiles are done (as GET /ready)")
    items: int
    beam: int
    max_batch: int
    max_requests: int
    answered: int = Field(description="POST /recommend bodies answered with 200")
    failed: int = Field(description="POST /recommend bodies answered with an error")
    batches: int = Field(description="model calls")
    batched_items: int = Field(description="requests those calls ran")
    bundle: BundleInfo


class Readiness(BaseModel):
    status: str = Field(description='"ready", "warming up" or "failed"')
    error: str | None = None


def body_schema() -> tuple[dict, dict]:
    """-> (the request body's OpenAPI schema, component schemas it refers to)."""
    ref = "#/components/schemas/{model}"
    _, top = models_json_schema([(RecommendBody, "validation")], ref_template=ref)
    return {"$ref": ref.format(model="RecommendBody")}, top["$defs"]
