"""The README's commands run against a tiny trained model, so the documentation cannot rot.

Every line of the README's ```bash / ```sh blocks is one command, and every command must be of
a kind this file knows:
- the two setup commands (install, default training) must be exactly the documented ones;
- other training and `prepare` commands are checked (configs load, flags parse), not run;
- recommend, evaluate (with a small `--limit`), export, serve and the curl requests run against
  the toy causal item-sequence run (`toy_items_run`), with `runs/default` and `bundles/default`
  pointing at temporary copies and Beauty ASINs / titles replaced by toy items.
The ```python blocks run too, with the same replacements.
"""

import contextlib
import csv
import io
import json
import lzma
import re
import select
import shlex
import shutil
import subprocess
import sys
import time
import urllib.request
from importlib import resources
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
MAX_LINES = 200
PROCESS_WORDS = re.compile(r"session|slot|issue #|subagent|helper|WORKSPACE", re.IGNORECASE)
SETUP = ['pip install -e ".[test]"', "python -m recsys_jax.train"]
TEST_COMMANDS = {"python -m pytest", 'python -m pytest -m "not slow"'}
LINT = "ruff check . && ruff format --check ."
ASIN = re.compile(r"\bB0[0-9A-Z]{8}\b")
EVAL_LIMIT = "8"  # evaluate commands run on the first few test cases only
SERVER_START_S = 120


def readme() -> str:
    return README.read_text(encoding="utf-8")


def code_blocks(text: str, langs: tuple[str, ...]) -> list[str]:
    return [
        m.group(2)
        for m in re.finditer(r"```(\w*)\n(.*?)```", text, re.DOTALL)
        if m.group(1) in langs
    ]


def commands(block: str) -> list[str]:
    """One command per line (backslash continuations joined), comments and blanks dropped."""
    out = []
    for line in block.replace("\\\n", " ").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            out.append(line)
    return out


def shell_words(command: str) -> list[str]:
    return shlex.split(command, comments=True)


def test_readme_is_short_and_free_of_process_words():
    text = readme()
    assert len(text.splitlines()) <= MAX_LINES, f"README has {len(text.splitlines())} lines"
    hits = sorted({m.group(0) for m in PROCESS_WORDS.finditer(text)})
    assert not hits, f"README mentions {hits}"


def test_setup_is_exactly_the_two_documented_commands():
    first = commands(code_blocks(readme(), ("bash", "sh"))[0])
    assert first == SETUP
    ci = (REPO / ".ci" / "run").read_text()
    # CI runs what the README tells users, with the lint step between install and tests.
    assert f"{SETUP[0]} && {LINT} && python -m pytest" in ci


def test_results_tables_have_one_best_row_and_reproducible_rows():
    text = readme()
    section = text.split("## Results", 1)[1].split("\n## ", 1)[0]
    tables = re.findall(r"((?:^\|.*\|\n)+)", section, re.MULTILINE)
    assert len(tables) == 3, "one table per dataset: Beauty, Sports, MovieLens-100K"
    reproduce = (REPO / "scripts" / "reproduce.sh").read_text()
    for table in tables:
        rows = table.splitlines()[2:]
        assert sum("**best**" in r for r in rows) == 1, table
        for row in rows:
            cell = row.split("|")[2].strip()
            name = cell.strip("`")
            if cell.startswith("`"):
                known = (
                    (REPO / "configs" / "experiments" / f"{name}.yaml").is_file()
                    or (REPO / "configs" / f"{name}.yaml").is_file()
                    or re.search(rf"\b{name}\b", reproduce) is not None
                )
                assert known, f"results row {name!r} is not a scripts/reproduce.sh row"


# ---------------------------------------------------------------------------------------------
# Running the commands


def beauty_catalog() -> tuple[dict[str, int], dict[str, int]]:
    """The embedded Beauty items: ASIN -> row, title -> row (titles of one item only)."""
    path = resources.files("recsys_jax.data") / "embedded" / "amazon_beauty_items.tsv.xz"
    with resources.as_file(path) as p, lzma.open(p, "rt", encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    titles: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        titles.setdefault(r["title"], []).append(i)
    return (
        {r["asin"]: i for i, r in enumerate(rows)},
        {t: rows_[0] for t, rows_ in titles.items() if len(rows_) == 1 and len(t) >= 12},
    )


class Workspace:
    """Maps the README's paths and Beauty items onto the toy run."""

    def __init__(self, run_dir: Path, data_dir: Path, tmp: Path):
        from recsys_jax.data import ItemResolver, load_prepared

        self.run = tmp / "runs" / "default"
        shutil.copytree(run_dir, self.run)
        self.bundle = tmp / "bundles" / "default"
        self.data_dir = str(data_dir)
        toy = ItemResolver(load_prepared(data_dir, "toy").catalog)
        self.toy_ids, self.toy_titles = toy.display_ids, toy.titles
        self.asins, self.titles = beauty_catalog()
        self.port = None

    def toy_item(self, beauty_row: int) -> int:
        return beauty_row % len(self.toy_ids)

    def substitute(self, text: str) -> str:
        text = text.replace("runs/default", str(self.run))
        text = text.replace("bundles/default", str(self.bundle))
        for title, row in self.titles.items():
            if title in text:
                text = text.replace(title, self.toy_titles[self.toy_item(row)])

        def asin(m):
            assert m.group(0) in self.asins, f"{m.group(0)} is not an embedded Beauty ASIN"
            return self.toy_ids[self.toy_item(self.asins[m.group(0)])]

        text = ASIN.sub(asin, text)
        if self.port is not None:
            text = text.replace("localhost:8080", f"127.0.0.1:{self.port}")
        return text


def run_main(module: str, argv: list[str]) -> tuple[int, str]:
    import importlib

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = importlib.import_module(module).main(argv)
    return rc, out.getvalue()


def with_option(argv: list[str], flag: str, value: str) -> list[str]:
    if flag in argv:
        argv = list(argv)
        argv[argv.index(flag) + 1] = value
        return argv
    return argv + [flag, value]


def check_train(argv: list[str]) -> None:
    from recsys_jax.config import load_config
    from recsys_jax.train import build_parser

    if argv == ["--help"]:
        with pytest.raises(SystemExit) as e, contextlib.redirect_stdout(io.StringIO()):
            run_main("recsys_jax.train", argv)
        assert e.value.code == 0
        return
    args = build_parser().parse_args(argv).args
    path = args.pop(0) if args and "=" not in args[0] else None
    if path is not None:
        assert (REPO / path).is_file(), path
        path = str(REPO / path)
    load_config(path, args)


def check_prepare(argv: list[str]) -> None:
    from recsys_jax.data.prepare import build_parser

    build_parser().parse_args(argv)


def start_server(ws: Workspace, argv: list[str]) -> subprocess.Popen:
    argv = with_option(argv, "--port", "0") + ["--no-warmup"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "recsys_jax.serve", *argv],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline, seen = time.monotonic() + SERVER_START_S, []
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 1.0)
        if not ready:
            continue
        line = proc.stdout.readline()
        if not line:  # the server exited
            break
        seen.append(line)
        m = re.search(r"serving \d+ items on http://[\d.]+:(\d+)", line)
        if m:
            ws.port = int(m.group(1))
            return proc
    proc.kill()
    proc.wait(timeout=10)
    raise AssertionError("server did not start:\n" + "".join(seen[-20:]))


def curl(words: list[str]) -> dict:
    data, method, url = None, "GET", None
    it = iter(words[1:])
    for w in it:
        if w == "-s":
            continue
        if w == "-X":
            method = next(it)
        elif w == "-d":
            data = next(it).encode()
        else:
            url = w
    request = urllib.request.Request(
        f"http://{url}", data=data, method=method, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        assert response.status == 200
        return json.loads(response.read())


@pytest.mark.slow
@pytest.mark.subprocess
def test_readme_commands_run(toy_items_run, tmp_path):
    run_dir, data_dir = toy_items_run
    ws = Workspace(run_dir, data_dir, tmp_path)
    text = readme()
    server = None
    ran = set()
    try:
        for block in code_blocks(text, ("bash", "sh")):
            for command in commands(block):
                if command in SETUP:
                    continue
                if command in TEST_COMMANDS:
                    continue
                words = shell_words(ws.substitute(command))
                where = f"README command {command!r}"
                if words[:3] == ["python", "-m", "recsys_jax.train"]:
                    check_train(words[3:])
                elif words[:3] == ["python", "-m", "recsys_jax.data.prepare"]:
                    check_prepare(words[3:])
                elif words[:3] == ["python", "-m", "recsys_jax.recommend"]:
                    rc, out = run_main(
                        "recsys_jax.recommend", words[3:] + ["--data-dir", ws.data_dir]
                    )
                    assert rc == 0, where
                    assert any(i in out for i in ws.toy_ids), (where, out)
                elif words[:3] == ["python", "-m", "recsys_jax.evaluate"]:
                    argv = with_option(words[3:], "--limit", EVAL_LIMIT)
                    rc, out = run_main("recsys_jax.evaluate", argv + ["--data-dir", ws.data_dir])
                    assert rc == 0, where
                    assert (ws.run / "eval_test" / "metrics.json").is_file(), where
                elif words[:3] == ["python", "-m", "recsys_jax.export"]:
                    rc, _ = run_main("recsys_jax.export", words[3:] + ["--data-dir", ws.data_dir])
                    assert rc == 0, where
                    assert (ws.bundle / "manifest.json").is_file(), where
                elif words[:3] == ["python", "-m", "recsys_jax.serve"]:
                    server = start_server(ws, words[3:])
                elif words[0] == "curl":
                    assert server is not None, f"{where}: no server started before it"
                    words = shell_words(ws.substitute(command))  # now with the real port
                    answer = curl(words)
                    if "health" not in words[-1]:
                        items = answer.get("items") or answer["results"][0]["items"]
                        assert items and all(x["id"] in ws.toy_ids for x in items), answer
                else:
                    raise AssertionError(
                        f"{where}: unknown kind of command; teach "
                        "tests/test_readme.py how to check it"
                    )
                ran.add(words[2] if words[0] == "python" else words[0])
        for block in code_blocks(text, ("python",)):
            exec(compile(ws.substitute(block), "README.md", "exec"), {})
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
    expected = {
        "recsys_jax.recommend",
        "recsys_jax.evaluate",
        "recsys_jax.export",
        "recsys_jax.serve",
        "curl",
    }
    assert expected <= ran, f"the README no longer shows {sorted(expected - ran)}"
