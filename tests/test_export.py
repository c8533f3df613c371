"""`recsys_jax.export`: the bundle's contents, and the round trip checkpoint -> bundle -> a
fresh process that recommends the same items without the model code."""

import json
import subprocess
import sys

import numpy as np
import pytest

from recsys_jax.recommend import Recommender
from recsys_jax.serving import BundleRecommender
from recsys_jax.serving.bundle import FILES, FORMAT_VERSION, MANIFEST

pytestmark = pytest.mark.slow

HISTORIES = [[0, 1, 2], [9], [30, 4], [17, 40, 41, 42]]

# Runs in a fresh interpreter: loads the bundle, recommends, and also calls the raw serialized
# function through jax.export alone; then reports which heavy modules got imported.
FRESH = r"""
import json, sys
import numpy as np, jax
from recsys_jax.serving import BundleRecommender
rec = BundleRecommender.load(sys.argv[1], max_batch=4)
hist = json.loads(sys.argv[2])
out = {"rows": rec.recommend_batch([[rec.item_ids[i] for i in h] for h in hist], k=8)}
# The serialized program alone: weights and trie from the .npz files, inputs from the spec.
blob = open(sys.argv[1] + "/recommend.stablehlo", "rb").read()
exported = jax.export.deserialize(bytearray(blob))
weights = dict(np.load(sys.argv[1] + "/weights.npz", allow_pickle=False))
trie = dict(np.load(sys.argv[1] + "/trie.npz", allow_pickle=False))
spec = json.load(open(sys.argv[1] + "/recommend.json"))
inputs = {s["name"]: np.zeros([3 if d == "b" else 2 if d == "h" else d for d in s["shape"]],
                              s["dtype"]) for s in spec["inputs"]["inputs"]}
inputs["segment_ids"][:, :4] = 1; inputs["part_a"][:, :4] = 1; inputs["exclude"][:] = -1
items, scores = exported.call(weights, trie, inputs)
out["raw_shape"] = list(items.shape); out["raw_items"] = np.asarray(items).tolist()
out["modules"] = sorted(m for m in sys.modules if m.split(".")[0] in ("flax", "optax", "orbax")
                        or m.startswith(("recsys_jax.model", "recsys_jax.training")))
print(json.dumps(out))
"""


def test_bundle_holds_every_file_with_checksums_and_a_symbolic_batch_spec(toy_bundle):
    manifest = json.loads((toy_bundle / MANIFEST).read_text())
    assert set(manifest["files"]) == set(FILES)
    assert all(len(f["sha256"]) == 64 and f["bytes"] > 0 for f in manifest["files"].values())
    for key in ("recsys_jax_version", "jax_version", "jaxlib_version", "flax_version", "created"):
        assert manifest[key]
    assert manifest["dtype"] == "float32" and manifest["format_version"] == FORMAT_VERSION == 2
    spec = json.loads((toy_bundle / "recommend.json").read_text())
    assert spec["decoding"]["beam"] == 8
    assert {s["name"] for s in spec["inputs"]["inputs"]} == {
        "tokens",
        "positions",
        "block_positions",
        "segment_ids",
        "part_a",
        "mask_pos",
        "exclude",
    }
    assert all(s["shape"][0] == "b" for s in spec["inputs"]["inputs"])
    assert [o["shape"] for o in spec["outputs"]] == [["b", 8], ["b", 8]]
    assert set(spec["platforms"]) == {"cpu", "cuda", "tpu"}
    # Plain arrays, no pickle.
    weights = np.load(toy_bundle / "weights.npz", allow_pickle=False)
    assert {w["name"] for w in spec["inputs"]["weights"]} == set(weights.files)
    assert "word_embeddings.embedding" in weights.files


@pytest.fixture(params=["prompt", "item_sequence"])
def run_and_bundle(request, toy_run, toy_bundle, toy_items_run, tmp_path_factory):
    """(run_dir, bundle) of a worded-prompt model and of a causal item-sequence model, whose
    exported program continues the history's span instead of starting at <sop>."""
    if request.param == "prompt":
        return toy_run[0], toy_bundle
    from recsys_jax.export import export_bundle

    run_dir = toy_items_run[0]
    return run_dir, export_bundle(
        run_dir, tmp_path_factory.mktemp("bundle") / "items", beam=8, log=lambda m: None
    )


@pytest.mark.subprocess
def test_fresh_process_recommends_what_the_checkpoint_does(run_and_bundle):
    run_dir, toy_bundle = run_and_bundle
    ref = Recommender.from_checkpoint(run_dir, beam=8)
    out = subprocess.run(
        [sys.executable, "-c", FRESH, str(toy_bundle), json.dumps(HISTORIES)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["modules"] == []  # served without flax/optax/orbax or the model/training code
    wants = ref.recommend_batch([[ref.catalog.item_ids[i] for i in h] for h in HISTORIES], k=8)
    for have, want in zip(got["rows"], wants, strict=True):
        assert [r[0] for r in have] == [r[0] for r in want]
        assert [r[1] for r in have] == [r[1] for r in want]
        np.testing.assert_allclose([r[2] for r in have], [r[2] for r in want], atol=1e-4)
    assert got["raw_shape"] == [3, 8]
    assert all(0 <= i < len(ref.catalog) for row in got["raw_items"] for i in row)


@pytest.mark.subprocess
def test_bf16_export_from_the_cli_halves_the_weights(toy_run, toy_bundle, tmp_path):
    run_dir, _ = toy_run
    out = tmp_path / "bf16"
    cli = [
        sys.executable,
        "-m",
        "recsys_jax.export",
        "--checkpoint",
        str(run_dir),
        "--out",
        str(out),
        "--dtype",
        "bf16",
        "--beam",
        "8",
        "--platforms",
        "cpu",
    ]
    result = subprocess.run(cli, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "[export] wrote" in result.stderr + result.stdout
    assert json.loads((out / MANIFEST).read_text())["dtype"] == "bfloat16"
    ratio = (out / "weights.npz").stat().st_size / (toy_bundle / "weights.npz").stat().st_size
    assert 0.45 < ratio < 0.6
    f32, bf16 = BundleRecommender.load(toy_bundle), BundleRecommender.load(out)
    assert all(w.dtype.name == "bfloat16" for w in bf16.bundle.weights.values())
    rows32, rows16 = f32.recommend(["1", "3"], k=8), bf16.recommend(["1", "3"], k=8)
    assert len(rows16) == 8 and len({r[0] for r in rows16} & {r[0] for r in rows32}) >= 4
    np.testing.assert_allclose(rows16[0][2], rows32[0][2], atol=0.5)
    again = subprocess.run(cli, capture_output=True, text=True, timeout=300)
    assert again.returncode == 2 and "--overwrite" in again.stderr


def test_merge_lora_bundle_matches_the_lora_checkpoint(toy_p5, toy_run, overrides, tmp_path):
    from recsys_jax.config import load_config
    from recsys_jax.export import export_bundle
    from recsys_jax.training.trainer import Trainer

    base_run, data_dir = toy_run
    lora_run = tmp_path / "lora"
    cfg = load_config(
        None,
        overrides(
            toy_p5,
            data_dir,
            lora_run,
            steps=3,
            **{
                "train.init_from": str(base_run),
                "train.lora_only": True,
                "model.lora_rank": 4,
                "train.learning_rate": 0.05,
            },
        ),
    )
    Trainer(cfg, log=lambda m: None).run()
    ref = Recommender.from_checkpoint(lora_run, beam=8)
    merged = export_bundle(
        lora_run, tmp_path / "merged", beam=8, merge=True, platforms=["cpu"], log=lambda m: None
    )
    manifest = json.loads((merged / MANIFEST).read_text())
    assert manifest["lora_merged"] and manifest["lora_rank"] == 0
    rec = BundleRecommender.load(merged)
    assert not any("lora" in name for name in rec.bundle.weights)
    wants = ref.recommend_batch([[ref.catalog.item_ids[i] for i in h] for h in HISTORIES], k=6)
    haves = rec.recommend_batch([[rec.item_ids[i] for i in h] for h in HISTORIES], k=6)
    for have, want in zip(haves, wants, strict=True):
        assert [r[0] for r in have] == [r[0] for r in want]
        np.testing.assert_allclose([r[2] for r in have], [r[2] for r in want], atol=1e-4)


def test_bad_options_fail_clearly(toy_run, tmp_path):
    from recsys_jax.export import export_bundle

    with pytest.raises(ValueError, match="dtype must be one of"):
        export_bundle(toy_run[0], tmp_path / "x", dtype="f16")
    (tmp_path / "notabundle").mkdir()
    with pytest.raises(FileExistsError, match="not a bundle"):
        export_bundle(toy_run[0], tmp_path / "notabundle", overwrite=True)


@pytest.mark.parametrize(
    "flags, message",
    [
        (
            ["--platforms", "cpu,bogus"],
            "argument --platforms: unknown platform(s) ['bogus']; choose from cpu, cuda, rocm, tpu",
        ),
        (["--platforms", ","], "argument --platforms: unknown platform(s) [',']"),
        (["--beam", "0"], "argument --beam: must be at least 1, got 0"),
    ],
)
def test_cli_rejects_bad_options_before_any_work(flags, message, tmp_path, capsys):
    from recsys_jax.export import main

    with pytest.raises(SystemExit) as exit_:
        main(["--checkpoint", str(tmp_path / "none"), "--out", str(tmp_path / "b"), *flags])
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err
