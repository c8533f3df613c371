"""scripts/colab_quickstart.ipynb runs top to bottom: its code cells execute in order in a
temporary folder, `!` shell lines as subprocesses, on a toy dataset (QUICKSTART_OVERRIDES).
The install cell is skipped: the package is already installed where tests run."""

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[1] / "scripts" / "colab_quickstart.ipynb"


def code_cells(path=NOTEBOOK) -> list[str]:
    nb = json.loads(path.read_text())
    assert nb["nbformat"] == 4
    return ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]


def to_python(cell: str) -> str:
    """`!cmd {expr}` -> a checked subprocess call with IPython's {expr} interpolation."""
    out = []
    for line in cell.splitlines():
        body = line.lstrip()
        indent = line[: len(line) - len(body)]
        if body.startswith("!"):
            out.append(f"{indent}_shell(f{body[1:]!r})")
        else:
            assert not body.startswith("%"), f"unsupported magic outside the install cell: {line}"
            out.append(line)
    return "\n".join(out)


def _shell(command: str) -> None:
    result = subprocess.run(command, shell=True, capture_output=True, text=True, timeout=600)
    print(result.stdout[-2000:])
    assert result.returncode == 0, f"`{command}` failed:\n{result.stderr[-4000:]}"


def test_every_shell_line_converts():
    code = to_python('x = 1\nif x:\n    !echo {x} "a b"\n')
    assert code == "x = 1\nif x:\n    _shell(f'echo {x} \"a b\"')"


@pytest.mark.slow
@pytest.mark.subprocess
def test_the_notebook_runs_top_to_bottom(toy_p5, overrides, tmp_path, monkeypatch, capsys):
    cells = code_cells()
    install = [c for c in cells if "pip install" in c]
    assert len(install) == 1 and cells[0] == install[0]
    assert any("default_backend" in c for c in cells)  # the TPU/CPU check
    # The notebook passes its overrides through a shell line, so none may hold a space: the
    # multitask family dict stays out and the toy run trains the default family.
    tiny = [
        o
        for o in overrides(
            toy_p5,
            tmp_path / "data",
            tmp_path / "unused",
            steps=3,
            **{"train.eval_every": 3, "train.checkpoint_every": 3},
        )
        if not o.startswith("train.run_dir=") and " " not in o
    ]
    monkeypatch.setenv("QUICKSTART_OVERRIDES", " ".join(tiny))
    monkeypatch.setenv("QUICKSTART_EVAL_LIMIT", "6")
    monkeypatch.chdir(tmp_path)
    namespace = {"_shell": _shell, "__name__": "__quickstart__"}
    for i, cell in enumerate(cells[1:], start=1):
        exec(compile(to_python(cell), f"{NOTEBOOK.name}[code cell {i}]", "exec"), namespace)
    printed = capsys.readouterr().out
    assert "bundle and checkpoint agree" in printed
    assert re.search(r'"items": \[', printed)  # the HTTP answer
    assert (tmp_path / "bundles/quickstart/manifest.json").is_file()
    assert os.path.isfile(tmp_path / "runs/quickstart/eval_test/metrics.json")
