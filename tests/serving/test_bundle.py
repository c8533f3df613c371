"""Bundle verification: every corrupted, truncated or missing file is caught by its checksum
or size before use, with an error that names the file."""

import json
import shutil

import pytest

from recsys_jax.serving import BundleError, load_bundle, verify_bundle
from recsys_jax.serving.bundle import FILES, load_arrays, save_arrays


@pytest.fixture()
def bundle_copy(toy_bundle, tmp_path):
    return shutil.copytree(toy_bundle, tmp_path / "bundle")


@pytest.mark.slow
def test_a_good_bundle_verifies_and_loads(toy_bundle):
    manifest = verify_bundle(toy_bundle)
    bundle = load_bundle(toy_bundle)
    assert bundle.manifest == manifest and len(bundle.item_ids) == len(bundle.spellings)
    assert bundle.exported.in_avals[0].shape  # the program deserialized


@pytest.mark.slow
@pytest.mark.parametrize("name", ["weights.npz", "recommend.stablehlo", "catalog.json"])
def test_a_flipped_byte_is_reported_as_corruption_of_that_file(bundle_copy, name):
    path = bundle_copy / name
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=rf"{name} is corrupted: its sha256 differs"):
        load_bundle(bundle_copy)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["weights.npz", "recommend.stablehlo", "tokenizer.json"])
def test_a_truncated_file_is_reported_with_its_sizes(bundle_copy, name):
    path = bundle_copy / name
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(
        BundleError,
        match=rf"{name} is truncated or altered: {len(data) // 3} "
        rf"bytes, the manifest says {len(data)}",
    ):
        load_bundle(bundle_copy)


@pytest.mark.slow
def test_missing_files_and_broken_manifests_fail_clearly(bundle_copy, tmp_path):
    (bundle_copy / "trie.npz").unlink()
    with pytest.raises(BundleError, match="trie.npz is missing"):
        load_bundle(bundle_copy)
    (bundle_copy / "manifest.json").write_text("{not json")
    with pytest.raises(BundleError, match="manifest.json is corrupted"):
        load_bundle(bundle_copy)
    manifest = {"format_version": 99, "files": {}}
    (bundle_copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="format version 99 is not supported"):
        load_bundle(bundle_copy)
    with pytest.raises(BundleError, match="not a recsys_jax bundle"):
        load_bundle(tmp_path / "nowhere")
    assert "manifest.json" not in FILES


def test_arrays_round_trip_including_bfloat16_without_pickle(tmp_path):
    import ml_dtypes
    import numpy as np

    arrays = {
        "a": np.arange(6, dtype=np.float32).reshape(2, 3).astype(ml_dtypes.bfloat16),
        "b": np.arange(4, dtype=np.int32),
    }
    save_arrays(tmp_path / "x.npz", arrays)
    raw = np.load(tmp_path / "x.npz", allow_pickle=False)
    assert raw["a"].dtype == np.uint16
    back = load_arrays(tmp_path / "x.npz", {"a": "bfloat16"})
    assert back["a"].dtype == ml_dtypes.bfloat16
    np.testing.assert_array_equal(back["a"].astype(np.float32), [[0, 1, 2], [3, 4, 5]])
    np.testing.assert_array_equal(back["b"], arrays["b"])
