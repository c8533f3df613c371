"""RecommendService (the endpoint without HTTP): request parsing, validation, status codes."""

import json

import pytest

from recsys_jax.serving import BundleRecommender
from recsys_jax.serving.requests import RecommendService

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def service(toy_bundle):
    svc = RecommendService(BundleRecommender.load(toy_bundle, max_batch=2), max_requests=3)
    yield svc
    svc.close()


def ask(service, body):
    return service.recommend(body if isinstance(body, bytes) else json.dumps(body).encode())


def test_single_and_batch_requests(service):
    status, single = ask(service, {"history": ["1", "3"], "k": 3})
    assert status == 200 and [set(x) for x in single["items"]] == [{"id", "title", "score"}] * 3
    status, batch = ask(
        service, {"requests": [{"history": ["1", "3"], "k": 3}, {"history": ["5"]}]}
    )
    assert status == 200
    first = batch["results"][0]["items"]  # batch size 2, not 1: float sums may differ slightly
    assert [x["id"] for x in first] == [x["id"] for x in single["items"]]
    assert [x["score"] for x in first] == pytest.approx(
        [x["score"] for x in single["items"]], abs=1e-4
    )
    assert len(batch["results"][1]["items"]) == 8  # default k = min(10, beam)


@pytest.mark.parametrize(
    "body, status, message",
    [
        (b"{not json", 400, "malformed JSON"),
        (b"\xff\xfe", 400, "malformed JSON"),
        ([1, 2], 400, "must be a JSON object"),
        ({"history": "1"}, 400, "must be a list of item ids"),
        ({"history": ["1"], "k": "3"}, 400, '"k" must be an integer'),
        ({"history": ["1"], "colour": 1}, 400, "unknown field"),
        ({"history": ["1"], "exclude_history": "no"}, 400, "true or false"),
        ({"requests": []}, 400, "non-empty list"),
        ({"history": []}, 422, "empty history"),
        ({"history": ["nope"]}, 422, "unknown item 'nope'"),
        ({"history": ["1"], "k": 50}, 422, "between 1 and 8"),
        ({"requests": [{"history": ["1"]}, {"history": ["zz"]}]}, 422, r"requests\[1\]: unknown"),
        ({"requests": [{"history": ["1"]}] * 4}, 413, "4 requests in one body; at most 3"),
        ({"history": ["1"] * 600}, 413, "at most 512"),
    ],
)
def test_bad_requests_get_a_status_and_a_message(service, body, status, message):
    import re

    got, payload = ask(service, body)
    assert got == status and re.search(message, payload["error"]), payload


def test_health_counts_answers(service):
    health = service.health()
    assert health["status"] == "ok" and health["beam"] == 8 and health["max_batch"] == 2
    assert health["bundle"]["dtype"] == "float32"
