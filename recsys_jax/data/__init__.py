"""Data: readers -> schema -> splits -> prepared array_record files (tfds) -> Grain batches.

The prepared-data and loader names are imported lazily (tensorflow-datasets and Grain are slow
to import), so `import recsys_jax.data.readers` stays light.
"""

from recsys_jax.data.item_refs import ItemResolver
from recsys_jax.data.schema import Catalog, DataError, Dataset, Interactions, UnknownItemError

_LAZY = {
    "read_dataset": "recsys_jax.data.readers",
    "read_embedded_beauty": "recsys_jax.data.readers",
    "load_prepared": "recsys_jax.data.prepared",
    "PreparedData": "recsys_jax.data.prepared",
    "EvalCases": "recsys_jax.data.prepared",
    "default_data_dir": "recsys_jax.data.prepared",
    "make_splits": "recsys_jax.data.tfds_builder",
    "write_prepared": "recsys_jax.data.tfds_builder",
    "PreparedSplits": "recsys_jax.data.tfds_builder",
    "make_train_iterator": "recsys_jax.data.loader",
    "make_train_dataset": "recsys_jax.data.loader",
}

__all__ = [
    "Catalog",
    "DataError",
    "Dataset",
    "Interactions",
    "ItemResolver",
    "UnknownItemError",
    *_LAZY,
]


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
