"""Prepare a dataset once: read -> (k-core) -> splits -> array_record files + JSON beside them.

    python -m recsys_jax.data.prepare --dataset amazon_beauty          # embedded, no path
    python -m recsys_jax.data.prepare --path ../shared/data/amazon_sports --format p5
    python -m recsys_jax.data.prepare --path ../shared/data/movielens_100k --format movielens
    python -m recsys_jax.data.prepare --path reviews_Beauty_5.json.gz --format amazon_json \\
        --items meta_Beauty.json.gz
    python -m recsys_jax.data.prepare --path my_interactions.csv --format csv --items items.csv

Writes `<data-dir>/<name>/` (layout in `recsys_jax.data.tfds_builder`); read it back with
`recsys_jax.data.prepared.load_prepared(data_dir, name)`. Ends by printing the users / items /
interactions and split sizes as a table and as one JSON line (the last line of stdout).
Bad input exits with status 2 and a one-line message naming the file (and line) at fault.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

from recsys_jax.cli import report_error
from recsys_jax.data import readers
from recsys_jax.data.prepared import DEFAULT_DATA_DIR_ENV, default_data_dir
from recsys_jax.data.schema import DataError, Dataset, UnknownItemError
from recsys_jax.data.splits import k_core

EMBEDDED = {"amazon_beauty": "embedded"}  # --dataset name -> reader format
FORMATS = ("p5", "movielens", "csv", "amazon_json")
# P5 folders, the embedded data and MovieLens-100K are already filtered (5-core / >= 20 ratings
# per user); raw Amazon reviews and users' own CSV are not.
DEFAULT_KCORE = {"embedded": 0, "p5": 0, "movielens": 0, "amazon_json": 5, "csv": 5}


def _resolve_amazon_json(path: Path, items: str | None) -> tuple[Path, Path | None]:
    """A reviews file, or a folder holding one `reviews_*.json[.gz]` (and `meta_*.json[.gz]`)."""
    if not path.is_dir():
        return path, Path(items) if items else None
    reviews = sorted(p for p in path.glob("reviews_*.json*"))
    if len(reviews) != 1:
        raise DataError(
            f"{path}: expected one reviews_*.json(.gz) file, found "
            f"{len(reviews)}; pass the reviews file itself as --path"
        )
    if items:
        return reviews[0], Path(items)
    metas = sorted(path.glob("meta_*.json*"))
    if len(metas) > 1:
        raise DataError(f"{path}: several meta_*.json files; choose one with --items")
    return reviews[0], metas[0] if metas else None


def _resolve_csv(path: Path, items: str | None) -> tuple[Path, Path | None]:
    """An interactions file, or a folder with `interactions.csv|tsv` (and `items.csv|tsv`)."""
    if not path.is_dir():
        return path, Path(items) if items else None
    found = [path / f"interactions.{ext}" for ext in ("csv", "tsv")]
    found = [p for p in found if p.exists()]
    if len(found) != 1:
        raise DataError(
            f"{path}: expected interactions.csv or interactions.tsv in the folder; "
            "or pass the interactions file itself as --path"
        )
    if items:
        return found[0], Path(items)
    item_files = [p for p in (path / "items.csv", path / "items.tsv") if p.exists()]
    return found[0], item_files[0] if item_files else None


def read_source(
    fmt: str, path: str | None, items: str | None = None, name: str | None = None
) -> tuple[Dataset, dict]:
    """Read one dataset; returns it and a JSON-able description of where it came from."""
    if fmt == "embedded":
        if path is not None or items is not None:
            raise DataError("the embedded dataset takes no --path or --items")
        ds = readers.read_embedded_beauty()
        source = {"format": "embedded", "path": "recsys_jax/data/embedded"}
    else:
        if fmt not in FORMATS:
            raise DataError(f"unknown --format {fmt!r}; choose one of {', '.join(FORMATS)}")
        if path is None:
            raise DataError(f"--format {fmt} needs --path")
        p = Path(path)
        if not p.exists():
            raise DataError(f"{p}: not found (missing dataset)")
        kwargs = {"name": name} if name else {}
        items_path = None
        if fmt == "p5":
            if items:
                raise DataError(
                    "--items is not used with --format p5 (items.tsv is read from the folder)"
                )
            ds = readers.read_p5_folder(p, **kwargs)
        elif fmt == "movielens":
            if items:
                raise DataError(
                    "--items is not used with --format movielens (u.item / *.item "
                    "is read from the folder)"
                )
            ds = readers.read_movielens(p, **kwargs)
        elif fmt == "amazon_json":
            p, items_path = _resolve_amazon_json(p, items)
            ds = readers.read_amazon_reviews(p, items_path, **kwargs)
        else:
            p, items_path = _resolve_csv(p, items)
            ds = readers.read_csv(p, items_path, **kwargs)
        source = {
            "format": fmt,
            "path": str(p.resolve()),
            "items": str(items_path.resolve()) if items_path else None,
        }
    if name:
        ds.name = name
    return ds, source


def prepare(
    fmt: str,
    path: str | None = None,
    *,
    items: str | None = None,
    name: str | None = None,
    kcore: int | None = None,
    data_dir: str | None = None,
    seed: int = 0,
    num_negatives: int = 99,
    overwrite: bool = False,
    progress: bool = True,
    log=None,
) -> dict:
    """Prepare one dataset; returns the summary that `main` prints (also as JSON)."""
    # Heavy imports (tensorflow_datasets) only here, so `--help` and errors stay fast.
    from recsys_jax.data import tfds_builder

    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    start = time.perf_counter()
    data_dir = data_dir or default_data_dir()
    if name is not None:
        tfds_builder.check_dataset_name(name)
    if kcore is None:
        kcore = DEFAULT_KCORE[fmt] if fmt in DEFAULT_KCORE else 0
    if kcore < 0:
        raise DataError(f"--kcore must be >= 0, got {kcore}")

    log(f"[1/4] reading {fmt}" + (f" from {path}" if path else ""))
    ds, source = read_source(fmt, path, items, name)
    tfds_builder.check_dataset_name(ds.name)
    target = tfds_builder.dataset_dir(data_dir, ds.name)
    if target.exists() and not overwrite:
        raise DataError(f"{target} already exists; pass --overwrite to prepare it again")
    for stale in tfds_builder.remove_stale_work_dirs(target):
        log(f"      removed {stale}, left by an interrupted preparation")
    read_counts = ds.summary_counts()
    log(f"      {_counts_line(read_counts)}")

    if kcore > 1:
        log(f"[2/4] {kcore}-core filtering")
        ds = k_core(ds, kcore)
        log(f"      {_counts_line(ds.summary_counts())}")
    else:
        log("[2/4] k-core filtering off")

    log(
        f"[3/4] splitting (seed {seed}): leave-one-out, {num_negatives} test negatives"
        + (", 80/10/10 ratings" if ds.has_ratings else "")
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        splits = tfds_builder.make_splits(ds, seed=seed, num_negatives=num_negatives)
    for w in caught:
        log(f"warning: {w.message}")

    log(f"[4/4] writing array_record splits to {target}")
    options = {
        "kcore": kcore,
        "seed": seed,
        "num_negatives": num_negatives,
        "name": name,
        "items": items,
    }
    if kcore > 1:
        source = {**source, "counts_before_kcore": read_counts}
    out = tfds_builder.write_prepared(
        splits, data_dir, source=source, options=options, overwrite=overwrite, progress=progress
    )
    return {
        "dataset": ds.name,
        **ds.summary_counts(),
        "splits": splits.split_sizes(),
        "users_left_out_of_sequences": int(splits.sequences.dropped_users),
        "path": str(out),
        "seconds": round(time.perf_counter() - start, 2),
    }


def _counts_line(c: dict) -> str:
    return f"users {c['users']:,} / items {c['items']:,} / interactions {c['interactions']:,}"


def format_table(summary: dict) -> str:
    rows = [
        ("users", summary["users"]),
        ("items", summary["items"]),
        ("interactions", summary["interactions"]),
    ]
    rows += [(f"split {k}", v) for k, v in summary["splits"].items()]
    width = max(len(k) for k, _ in rows)
    lines = [f"prepared {summary['dataset']} -> {summary['path']} ({summary['seconds']} s)"]
    lines += [f"  {k:<{width}}  {v:>10,}" for k, v in rows]
    if summary.get("users_left_out_of_sequences"):
        lines.append(
            f"  ({summary['users_left_out_of_sequences']:,} users with < 3 "
            "interactions are not in the sequence splits)"
        )
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m recsys_jax.data.prepare",
        description="Prepare a dataset's splits as array_record files (tensorflow-datasets).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="--path for amazon_json: a reviews_X.json(.gz) file or a folder holding one "
        "(meta_X.json(.gz) beside it is used as the item file). --path for csv: the "
        "interactions file (header user,item,timestamp[,rating][,review][,summary]) or a "
        "folder with interactions.csv|tsv and items.csv|tsv.",
    )
    src = p.add_mutually_exclusive_group()
    src.add_argument(
        "--dataset", choices=sorted(EMBEDDED), help="an embedded dataset (needs no path)"
    )
    src.add_argument("--path", help="dataset folder or file to read")
    p.add_argument("--format", choices=FORMATS, help="format of --path")
    p.add_argument("--items", help="item file (csv: items.csv/tsv; amazon_json: meta_X.json.gz)")
    p.add_argument("--name", help="name of the prepared dataset (default: from the source)")
    p.add_argument(
        "--kcore",
        type=int,
        default=None,
        help="k-core filter; 0 = off (default: 5 for amazon_json and csv, off for "
        "p5, movielens and the embedded data, which are already filtered)",
    )
    p.add_argument(
        "--data-dir",
        default=None,
        help=f"output root (default: ${DEFAULT_DATA_DIR_ENV} or ./data_prepared)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of negatives and rating split")
    p.add_argument("--negatives", type=int, default=99, help="test negatives per user")
    p.add_argument("--overwrite", action="store_true", help="replace an existing preparation")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.dataset:
            if args.format:
                raise DataError(
                    "--dataset takes no --format (it is embedded); use --path with "
                    "--format for other data"
                )
            fmt, path = EMBEDDED[args.dataset], None
        elif args.path:
            if not args.format:
                raise DataError(f"--path needs --format ({', '.join(FORMATS)})")
            fmt, path = args.format, args.path
        else:
            raise DataError("give --dataset amazon_beauty, or --path DIR --format FORMAT")
        summary = prepare(
            fmt,
            path,
            items=args.items,
            name=args.name,
            kcore=args.kcore,
            data_dir=args.data_dir,
            seed=args.seed,
            num_negatives=args.negatives,
            overwrite=args.overwrite,
            progress=not args.no_progress,
        )
    except (DataError, UnknownItemError) as e:
        return report_error(e)
    print(format_table(summary))
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
