"""The prepare command: end to end in a subprocess, and its options and errors in process."""

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from recsys_jax.data import prepare as prep
from recsys_jax.data.prepared import load_prepared

REPO = Path(__file__).resolve().parents[2]


def write_tiny_p5(folder: Path, n_users=8, n_items=15) -> Path:
    """Each user has 4-6 distinct items; items.tsv with titles and categories."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    lines = []
    for u in range(1, n_users + 1):
        items = rng.choice(np.arange(1, n_items + 1), size=4 + u % 3, replace=False)
        lines.append(" ".join(map(str, [u, *items])))
    (folder / "sequential_data.txt").write_text("\n".join(lines) + "\n")
    rows = ["item_id\tasin\ttitle\tcategories_json\tidgenrec_text_id\ttitle_source"]
    rows += [
        f"{i}\tA{i}\tThing {i}\t{json.dumps([['Shop', f'Aisle {i % 3}']])}\t\t"
        for i in range(1, n_items + 1)
    ]
    (folder / "items.tsv").write_text("\n".join(rows) + "\n")
    return folder


def run_cli(*args, env_extra=None):
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.update(env_extra or {})
    return subprocess.run(
        [sys.executable, "-m", "recsys_jax.data.prepare", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.slow
@pytest.mark.subprocess
def test_cli_end_to_end_on_tiny_p5(tmp_path):
    src = write_tiny_p5(tmp_path / "tiny_p5")
    out = tmp_path / "prepared"
    proc = run_cli(
        "--path",
        str(src),
        "--format",
        "p5",
        "--data-dir",
        str(out),
        "--negatives",
        "5",
        "--no-progress",
    )
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    n_inter = sum(
        len(line.split()) - 1 for line in (src / "sequential_data.txt").read_text().splitlines()
    )
    assert summary["dataset"] == "tiny_p5"
    assert (summary["users"], summary["items"], summary["interactions"]) == (8, 15, n_inter)
    assert summary["splits"] == {"train": 8, "validation": 8, "test": 8}
    assert "users" in proc.stdout and "split test" in proc.stdout  # the table
    data = load_prepared(out, "tiny_p5")
    assert data.num_items == 15 and data.test_cases().negatives.shape == (8, 5)
    assert data.meta["options"]["kcore"] == 0 and data.meta["source"]["format"] == "p5"
    cat = data.catalog  # the ASINs of items.tsv survive preparation
    assert cat.source_ids[cat.index_of("7")] == "A7"


@pytest.mark.slow
@pytest.mark.subprocess
def test_cli_data_error_exits_2_without_traceback(tmp_path):
    proc = run_cli(
        "--path", str(tmp_path / "nowhere"), "--format", "p5", "--data-dir", str(tmp_path / "out")
    )
    assert proc.returncode == 2
    assert "error:" in proc.stderr and "nowhere" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
@pytest.mark.subprocess
def test_cli_default_data_dir_from_environment_and_reproducible(tmp_path):
    src = write_tiny_p5(tmp_path / "envp5")
    proc = run_cli(
        "--path",
        str(src),
        "--format",
        "p5",
        "--negatives",
        "3",
        "--no-progress",
        env_extra={"RECSYS_JAX_DATA_DIR": str(tmp_path / "from_env")},
    )
    assert proc.returncode == 0, proc.stderr
    meta = json.loads((tmp_path / "from_env" / "envp5" / "meta.json").read_text())
    # The same preparation in this (another) process gives the same records.
    prep.prepare(
        "p5",
        str(src),
        data_dir=str(tmp_path / "here"),
        num_negatives=3,
        progress=False,
        log=lambda m: None,
    )
    again = json.loads((tmp_path / "here" / "envp5" / "meta.json").read_text())
    assert meta["fingerprints"] == again["fingerprints"]


def quiet(*args, **kwargs):
    return prep.prepare(*args, progress=False, log=lambda m: None, **kwargs)


def test_prepare_name_seed_and_overwrite(tmp_path, capsys):
    src = write_tiny_p5(tmp_path / "p5")
    s = quiet("p5", str(src), name="renamed", data_dir=str(tmp_path), num_negatives=4, seed=3)
    assert s["dataset"] == "renamed" and (tmp_path / "renamed" / "meta.json").exists()
    assert load_prepared(tmp_path, "renamed").meta["seeds"]["test_negatives"] == 3
    # Already there: status 2 and a hint, unless --overwrite.
    args = [
        "--path",
        str(src),
        "--format",
        "p5",
        "--name",
        "renamed",
        "--data-dir",
        str(tmp_path),
        "--negatives",
        "4",
        "--no-progress",
    ]
    assert prep.main(args) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert prep.main(args + ["--overwrite", "--seed", "4"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["dataset"] == "renamed"
    assert load_prepared(tmp_path, "renamed").meta["seeds"]["test_negatives"] == 4


@pytest.mark.parametrize(
    "argv,needle",
    [
        ([], "--dataset amazon_beauty"),
        (["--path", "x"], "--format"),
        (["--dataset", "amazon_beauty", "--format", "p5"], "embedded"),
        (["--path", "x", "--format", "p5", "--name", "bad/name"], "--name"),
        (["--path", "x", "--format", "p5", "--kcore", "-1"], "--kcore"),
    ],
)
def test_cli_usage_errors(argv, needle, capsys, tmp_path):
    assert prep.main(argv + ["--data-dir", str(tmp_path)]) == 2
    assert needle in capsys.readouterr().err


def write_amazon_5core(folder: Path) -> Path:
    """12 users x 12 items, user u reviews items u..u+5 (each item gets 6 reviews), plus one
    sparse user and one rare item that 5-core filtering must remove."""
    folder.mkdir(parents=True)
    with gzip.open(folder / "reviews_Toy_5.json.gz", "wt") as f:
        t = 1_400_000_000
        for u in range(12):
            for j in range(6):
                t += 1
                f.write(
                    json.dumps(
                        {
                            "reviewerID": f"U{u}",
                            "asin": f"B{(u + j) % 12}",
                            "overall": float(1 + (u + j) % 5),
                            "unixReviewTime": t,
                            "reviewText": f"text {u} {j}",
                            "summary": f"s{u}",
                        }
                    )
                    + "\n"
                )
        f.write(
            json.dumps(
                {"reviewerID": "SPARSE", "asin": "RARE", "overall": 3.0, "unixReviewTime": t + 1}
            )
            + "\n"
        )
    with gzip.open(folder / "meta_Toy.json.gz", "wt") as f:
        for i in range(12):
            f.write(repr({"asin": f"B{i}", "title": f"Toy {i}", "categories": [["Toys"]]}) + "\n")
    return folder


def test_prepare_amazon_json_folder_with_default_kcore(tmp_path):
    src = write_amazon_5core(tmp_path / "amazon")
    s = quiet("amazon_json", str(src), data_dir=str(tmp_path / "out"), num_negatives=5)
    assert s["dataset"] == "reviews_Toy_5"
    assert (s["users"], s["items"], s["interactions"]) == (12, 12, 72)  # 5-core removed 1+1
    assert s["splits"]["train"] == 12
    assert sum(s["splits"][k] for k in ("rating_train", "rating_validation", "rating_test")) == 72
    data = load_prepared(tmp_path / "out", "reviews_Toy_5")
    assert data.meta["options"]["kcore"] == 5
    assert data.meta["source"]["counts_before_kcore"]["interactions"] == 73
    assert data.catalog.titles[data.catalog.index_of("B3")] == "Toy 3"
    rows = data.rating_rows("rating_train")
    assert all(r.startswith("text ") for r in rows["review"])


def test_prepare_csv_folder(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    lines = ["user,item,timestamp,rating"]
    lines += [f"u{u},i{(u + j) % 10},{j},{1 + j % 5}" for u in range(10) for j in range(5)]
    (folder / "interactions.csv").write_text("\n".join(lines) + "\n")
    (folder / "items.csv").write_text(
        "item,title\n" + "".join(f"i{i},Item {i}\n" for i in range(10))
    )
    s = quiet("csv", str(folder), kcore=0, data_dir=str(tmp_path / "out"), num_negatives=3)
    assert (s["users"], s["items"], s["interactions"]) == (10, 10, 50)
    assert s["dataset"] == "interactions" and "rating_test" in s["splits"]
    data = load_prepared(tmp_path / "out", "interactions")
    assert data.catalog.titles[0] == "Item 0" and not data.has_reviews


def test_prepare_removes_folders_left_by_a_killed_preparation(tmp_path):
    from recsys_jax.data import tfds_builder

    src = write_tiny_p5(tmp_path / "p5")
    out = tmp_path / "out"
    host, dead = tfds_builder._HOST, 2**30 - 1  # beyond any pid_max: no such process
    other_host = "0" * 8 if host != "0" * 8 else "1" * 8
    stale = [out / f".p5.preparing-{host}-{dead}-k2j4x9q_", out / ".p5.k2j4x9q_"]  # + old name
    kept = [
        out / f".p5.preparing-{host}-{os.getpid()}-live1234",  # still running
        out / f".p5.preparing-{other_host}-{dead}-elsewhere",  # another machine's
        out / f".p5.x.preparing-{host}-{dead}-otherset",  # another dataset's
    ]
    for folder in stale + kept:
        (folder / "train_sequences").mkdir(parents=True)
    quiet("p5", str(src), data_dir=str(out), num_negatives=3)
    assert not any(p.exists() for p in stale)
    assert all(p.exists() for p in kept)
    assert (out / "p5" / "meta.json").exists()
    assert sorted(p.name for p in out.iterdir()) == sorted(["p5", *(p.name for p in kept)])


def test_cli_bad_input_files_exit_2_with_one_line(tmp_path, capsys):
    inter = tmp_path / "i.csv"
    inter.write_text("user,item,timestamp\na,x,1\n")
    base = ["--format", "csv", "--data-dir", str(tmp_path / "out"), "--no-progress"]
    assert prep.main(["--path", str(inter), "--items", str(tmp_path), *base]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last == f"error: {tmp_path}: is a folder; give the file itself"
    inter.write_bytes(b"user,item,timestamp\na,caf\xe9,1\n")
    assert prep.main(["--path", str(inter), *base]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith(f"error: {inter}:2: not UTF-8 text") and "re-save it as UTF-8" in last
