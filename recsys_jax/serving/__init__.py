"""Serving from an exported bundle, without the model or training code.

    from recsys_jax.serving import BundleRecommender, load_bundle, BundleError
    rec = BundleRecommender.load("bundles/default")
    rec.recommend(["B004756YJA"], k=10)      # -> [(item_id, title, score), ...]

`bundle.py` is the on-disk format and its checksum verification, `recommender.py` turns item
references into prompts and calls the exported beam search, `requests.py` validates JSON
requests, `batcher.py` merges concurrent requests into micro-batches, `api.py` is the HTTP layer
(FastAPI on uvicorn, the `serve` extra) that `recsys_jax.serve` runs. None of these import
flax, optax, orbax or `recsys_jax.model`.
"""

from recsys_jax.serving.bundle import Bundle, BundleError, load_bundle, verify_bundle
from recsys_jax.serving.recommender import BundleRecommender

__all__ = ["Bundle", "BundleError", "BundleRecommender", "load_bundle", "verify_bundle"]
