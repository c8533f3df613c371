"""Readers: each source format on disk -> `schema.Dataset`.

Formats: the P5 / S3-Rec folder (`sequential_data.txt` + `items.tsv`), MovieLens-100K (original
`u.data`/`u.item` or RecBole atomic `*.inter`/`*.item`), raw Amazon 2014 review + metadata JSON
lines, and a generic CSV/TSV schema for users' own data (see README "Your own data").
Every parse error names the file and line.
"""

from __future__ import annotations

import ast
import csv
import json
import os
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

from recsys_jax.data.schema import DataError, Dataset, build_dataset
from recsys_jax.data.text_files import delimiter_hint, open_text, parse_rating, parse_timestamp

csv.field_size_limit(1 << 30)

# MovieLens-100K genre flags in u.item, in file order (fixed by the dataset's documentation).
ML100K_GENRES = [
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
]


def _find(folder: Path, *names: str) -> Path | None:
    for name in names:
        for candidate in (folder / name, folder / (name + ".xz"), folder / (name + ".gz")):
            if candidate.exists():
                return candidate
    return None


def _parse_categories(text: str, where: str) -> list[str]:
    """`categories_json` is a list of category paths; keep distinct names, most specific last."""
    if not text:
        return []
    try:
        paths = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{where}: categories_json is not valid JSON ({e.msg})") from None
    names: list[str] = []
    for path in paths:
        for name in path if isinstance(path, list) else [path]:
            if name not in names:
                names.append(str(name))
    return names


# ---------------------------------------------------------------------------------------------
# P5 / S3-Rec folder


def read_p5_folder(folder: str | os.PathLike, name: str | None = None) -> Dataset:
    """`sequential_data.txt` (`user item item ...`, time order) plus optional `items.tsv`.

    P5 numbers items itself; each item's ASIN comes from the `asin` column of `items.tsv`, or,
    for items that lack one there, from `datamaps.json` (`id2item`)."""
    folder = Path(folder)
    if folder.is_file():
        raise DataError(f"{folder}: is a file; --format p5 reads the dataset folder")
    if not folder.is_dir():
        raise DataError(f"{folder}: dataset folder not found")
    seq_path = _find(folder, "sequential_data.txt")
    if seq_path is None:
        raise DataError(f"{folder}: no sequential_data.txt (expected the P5 / S3-Rec layout)")
    catalog_rows, asins = {}, {}
    items_path = _find(folder, "items.tsv")
    if items_path is not None:
        catalog_rows, asins = _read_items_tsv(items_path)
    events = []
    with open_text(seq_path) as f:
        for line_no, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            if not all(p.isdigit() for p in parts):
                raise DataError(
                    f"{seq_path}:{line_no}: expected integer ids "
                    f"'user item item ...', got {line.strip()[:80]!r}"
                )
            if len(parts) < 2:
                raise DataError(f"{seq_path}:{line_no}: user {parts[0]} has no items")
            user = parts[0]
            events.extend((user, item, pos) for pos, item in enumerate(parts[1:]))
    datamaps = _find(folder, "datamaps.json")
    # The datamaps file is large; read it only when items.tsv left some item without an ASIN.
    if datamaps is not None and any(not asins.get(ev[1]) for ev in events):
        asins = {**_read_datamaps_items(datamaps), **{k: v for k, v in asins.items() if v}}
    return build_dataset(
        name or folder.name, events, catalog_rows, source=str(seq_path), source_ids=asins
    )


def _read_datamaps_items(path: Path) -> dict[str, str]:
    """P5's `datamaps.json`: `id2item` maps its item numbers to ASINs."""
    with open_text(path) as f:
        try:
            maps = json.load(f)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
    id2item = maps.get("id2item") if isinstance(maps, dict) else None
    if not isinstance(id2item, dict):
        raise DataError(f"{path}: expected an object with an 'id2item' map")
    return {str(k): str(v) for k, v in id2item.items()}


def _read_items_tsv(path: Path) -> tuple[dict[str, tuple[str, list[str]]], dict[str, str]]:
    """Catalog rows (title, categories) and ASINs (empty when there is no `asin` column)."""
    rows, asins = {}, {}
    with open_text(path) as f:
        reader = csv.reader(f, delimiter="\t")
        header = next(reader, None)
        if header is None or "item_id" not in header or "title" not in header:
            raise DataError(f"{path}:1: header must name at least item_id and title")
        col = {h: k for k, h in enumerate(header)}
        for line_no, row in enumerate(reader, 2):
            if len(row) != len(header):
                raise DataError(f"{path}:{line_no}: {len(row)} fields, header has {len(header)}")
            title = row[col["title"]].strip()
            if not title and "idgenrec_text_id" in col:  # Sports: only a title-derived phrase
                title = row[col["idgenrec_text_id"]].strip()
            cats = (
                _parse_categories(row[col["categories_json"]], f"{path}:{line_no}")
                if "categories_json" in col
                else []
            )
            rows[row[col["item_id"]]] = (title, cats)
            if "asin" in col:
                asins[row[col["item_id"]]] = row[col["asin"]].strip()
    return rows, asins


def read_embedded_beauty() -> Dataset:
    """Amazon Beauty 5-core as vendored in the package (no path, no network). Its items file is
    P5's `items.tsv`, so the ASINs come from its `asin` column."""
    root = resources.files("recsys_jax.data") / "embedded"
    with resources.as_file(root) as folder:
        events_path = Path(folder) / "amazon_beauty_sequential_data.txt.xz"
        items_path = Path(folder) / "amazon_beauty_items.tsv.xz"
        catalog_rows, asins = _read_items_tsv(items_path)
        events = []
        with open_text(events_path) as f:
            for line in f:
                parts = line.split()
                events.extend((parts[0], item, pos) for pos, item in enumerate(parts[1:]))
    return build_dataset(
        "amazon_beauty", events, catalog_rows, source=str(events_path), source_ids=asins
    )


# ---------------------------------------------------------------------------------------------
# MovieLens-100K


def read_movielens(folder: str | os.PathLike, name: str = "movielens_100k") -> Dataset:
    """Either layout: original (`u.data`, `u.item`) or RecBole atomic (`*.inter`, `*.item`)."""
    folder = Path(folder)
    if folder.is_file():
        raise DataError(f"{folder}: is a file; --format movielens reads the dataset folder")
    if not folder.is_dir():
        raise DataError(f"{folder}: MovieLens folder not found")
    if (folder / "u.data").exists():
        return _read_movielens_original(folder, name)
    inter = sorted(folder.glob("*.inter"))
    if inter:
        return _read_movielens_atomic(inter[0], name)
    raise DataError(
        f"{folder}: neither u.data (original layout) nor *.inter (RecBole atomic) found"
    )


def _read_movielens_original(folder: Path, name: str) -> Dataset:
    catalog_rows = {}
    item_path = folder / "u.item"
    if item_path.exists():
        with open_text(item_path, encoding="latin-1") as f:
            for line_no, line in enumerate(f, 1):
                if not line.strip():
                    continue
                parts = line.rstrip("\n").split("|")
                if len(parts) < 5 + len(ML100K_GENRES):
                    raise DataError(
                        f"{item_path}:{line_no}: expected "
                        f"{5 + len(ML100K_GENRES)} '|' fields, got {len(parts)}"
                    )
                flags = parts[5 : 5 + len(ML100K_GENRES)]
                genres = [g for g, flag in zip(ML100K_GENRES, flags) if flag == "1"]
                catalog_rows[parts[0]] = (parts[1].strip(), genres)
    events = []
    data_path = folder / "u.data"
    with open_text(data_path) as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            parts = line.split()
            if len(parts) < 4:
                raise DataError(
                    f"{data_path}:{line_no}: expected 'user item rating timestamp', "
                    f"got {line.strip()[:80]!r}"
                )
            where = f"{data_path}:{line_no}"
            ts, rating = parse_timestamp(parts[3], where), parse_rating(parts[2], where)
            events.append((parts[0], parts[1], ts, rating))
    return build_dataset(name, events, catalog_rows, with_rating=True, source=str(data_path))


def _atomic_rows(path: Path) -> Iterator[tuple[int, dict[str, str]]]:
    """RecBole atomic file: tab-separated with a typed header `name:type`."""
    with open_text(path) as f:
        header_line = f.readline()
        if not header_line.strip():
            raise DataError(f"{path}:1: empty header")
        header = [h.split(":")[0] for h in header_line.rstrip("\n").split("\t")]
        for line_no, line in enumerate(f, 2):
            if not line.strip():
                continue
            fields = line.rstrip("\n").split("\t")
            if len(fields) != len(header):
                raise DataError(f"{path}:{line_no}: {len(fields)} fields, header has {len(header)}")
            yield line_no, dict(zip(header, fields))


def _read_movielens_atomic(inter_path: Path, name: str) -> Dataset:
    catalog_rows = {}
    item_path = inter_path.with_suffix(".item")
    if item_path.exists():
        for _, row in _atomic_rows(item_path):
            title = row.get("movie_title", "").strip()
            genres = row.get("class", "").split()
            catalog_rows[row["item_id"]] = (title, genres)
    events = []
    for line_no, row in _atomic_rows(inter_path):
        where = f"{inter_path}:{line_no}"
        if not all(k in row for k in ("user_id", "item_id", "rating", "timestamp")):
            raise DataError(f"{where}: needs the columns user_id, item_id, rating and timestamp")
        ts, rating = parse_timestamp(row["timestamp"], where), parse_rating(row["rating"], where)
        events.append((row["user_id"], row["item_id"], ts, rating))
    return build_dataset(name, events, catalog_rows, with_rating=True, source=str(inter_path))


# ---------------------------------------------------------------------------------------------
# Raw Amazon 2014 review / metadata JSON lines


def _json_lines(path: Path) -> Iterator[tuple[int, dict]]:
    """The 2014 review files are JSON; the metadata files are Python literals. Accept both."""
    with open_text(path) as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                try:
                    record = ast.literal_eval(line)
                except (ValueError, SyntaxError):
                    raise DataError(f"{path}:{line_no}: not a JSON object") from None
            if not isinstance(record, dict):
                raise DataError(f"{path}:{line_no}: not a JSON object")
            yield line_no, record


def read_amazon_reviews(
    reviews_path: str | os.PathLike,
    meta_path: str | os.PathLike | None = None,
    name: str | None = None,
) -> Dataset:
    """`reviews_X_5.json.gz` (reviewerID, asin, overall, reviewText, summary, unixReviewTime)
    and optionally `meta_X.json.gz` (asin, title, categories)."""
    reviews_path = Path(reviews_path)
    catalog_rows = {}
    if meta_path is not None:
        meta_path = Path(meta_path)
        for line_no, rec in _json_lines(meta_path):
            if "asin" not in rec:
                raise DataError(f"{meta_path}:{line_no}: record has no 'asin'")
            cats = []
            for path in rec.get("categories", []) or []:
                for c in path if isinstance(path, list) else [path]:
                    if c not in cats:
                        cats.append(str(c))
            catalog_rows[str(rec["asin"])] = (str(rec.get("title", "")).strip(), cats)
    events = []
    for line_no, rec in _json_lines(reviews_path):
        where = f"{reviews_path}:{line_no}"
        if not all(k in rec for k in ("reviewerID", "asin", "overall", "unixReviewTime")):
            raise DataError(f"{where}: needs reviewerID, asin, overall and unixReviewTime")
        events.append(
            (
                rec["reviewerID"],
                rec["asin"],
                parse_timestamp(rec["unixReviewTime"], where),
                parse_rating(rec["overall"], where),
                str(rec.get("reviewText", "")),
                str(rec.get("summary", "")),
            )
        )
    stem = reviews_path.name.split(".")[0]
    return build_dataset(
        name or stem,
        events,
        catalog_rows,
        with_rating=True,
        with_review=True,
        source=str(reviews_path),
    )


# ---------------------------------------------------------------------------------------------
# Generic CSV / TSV


def read_csv(
    interactions_path: str | os.PathLike,
    items_path: str | os.PathLike | None = None,
    name: str | None = None,
) -> Dataset:
    """Interactions file with header `user,item,timestamp[,rating][,review][,summary]`; optional
    items file with header `item,title[,attributes]` (attributes separated by `|`). A `.tsv`
    suffix means tab-separated, anything else comma-separated."""
    interactions_path = Path(interactions_path)
    catalog_rows = {}
    if items_path is not None:
        items_path = Path(items_path)
        for _line_no, row in _csv_rows(items_path, required=("item", "title")):
            attrs = [a.strip() for a in row.get("attributes", "").split("|") if a.strip()]
            catalog_rows[row["item"]] = (row["title"].strip(), attrs)
    events = []
    with_rating = with_review = False
    for line_no, row in _csv_rows(interactions_path, required=("user", "item", "timestamp")):
        with_rating = "rating" in row
        with_review = "review" in row
        where = f"{interactions_path}:{line_no}"
        ev = [row["user"], row["item"], parse_timestamp(row["timestamp"], where)]
        if with_rating:
            ev.append(parse_rating(row["rating"], where))
        elif with_review:
            ev.append(float("nan"))
        if with_review:
            ev += [row["review"], row.get("summary", "")]
        events.append(tuple(ev))
    return build_dataset(
        name or interactions_path.stem,
        events,
        catalog_rows,
        with_rating=with_rating or with_review,
        with_review=with_review,
        source=str(interactions_path),
    )


def _csv_rows(path: Path, required: tuple[str, ...]) -> Iterator[tuple[int, dict[str, str]]]:
    delimiter = "\t" if ".tsv" in path.suffixes else ","
    with open_text(path) as f:
        reader = csv.reader(f, delimiter=delimiter)
        header = next(reader, None)
        if header is None:
            raise DataError(f"{path}:1: empty file")
        header = [h.strip() for h in header]
        missing = [r for r in required if r not in header]
        if missing:
            raise DataError(
                f"{path}:1: header lacks column(s) {missing}; expected "
                f"{', '.join(required)} (see README, 'Your own data')"
                + delimiter_hint(delimiter.join(header), delimiter, required)
            )
        for line_no, fields in enumerate(reader, 2):
            if not fields:
                continue
            if len(fields) != len(header):
                raise DataError(f"{path}:{line_no}: {len(fields)} fields, header has {len(header)}")
            yield line_no, dict(zip(header, fields))


def read_dataset(fmt: str, path: str | None = None, **kwargs) -> Dataset:
    """Dispatch on a format name; `embedded` needs no path."""
    if fmt == "embedded":
        return read_embedded_beauty()
    if path is None:
        raise DataError(f"format {fmt!r} needs --path")
    readers = {
        "p5": read_p5_folder,
        "movielens": read_movielens,
        "csv": read_csv,
        "amazon_json": read_amazon_reviews,
    }
    if fmt not in readers:
        raise DataError(f"unknown format {fmt!r}; choose one of {['embedded', *readers]}")
    return readers[fmt](path, **kwargs)
