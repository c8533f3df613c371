import dataclasses
from pathlib import Path

import pytest
import yaml

from recsys_jax import configlib
from recsys_jax.config import Config, load_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_beauty_yaml_is_the_default_run():
    assert dataclasses.asdict(load_config(CONFIGS / "beauty.yaml")) == dataclasses.asdict(Config())


@pytest.mark.parametrize("name", ["tiny", "beauty", "small", "base", "glm_10b"])
def test_presets_load_and_validate(name):
    cfg = load_config(CONFIGS / f"{name}.yaml")
    assert cfg.data.seq_len <= cfg.model.max_positions


def test_overrides_are_typed_and_nested():
    cfg = load_config(
        None,
        [
            "train.steps=7",
            "model.dtype=bfloat16",
            "data.pack=false",
            "masking.kind_probs=[0.5,0.5,0.0]",
            "data.family_weights={sequential: 2.0}",
            "data.path=null",
        ],
    )
    assert cfg.train.steps == 7 and cfg.model.dtype == "bfloat16" and cfg.data.pack is False
    assert cfg.masking.kind_probs == (0.5, 0.5, 0.0)
    assert cfg.data.family_weights == {"sequential": 2.0} and cfg.data.path is None


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.stepz=3", "unknown config key"),
        ("train.steps=abc", "cannot read"),
        ("trainsteps", "section.key=value"),
        ("data.index=isbn", "choose one of title"),
        ("model.num_heads=3", "not divisible"),
        ("train.grad_accum=5", "divisible by"),
        ("data.seq_len=2048", "exceeds model.max_positions"),
        ("train.grad_clip=0", "must be positive"),
        ("data.sequence_objective=bert", "choose causal or infill"),
        ("train.learning_rate=0", "train.learning_rate=0.0 must be a positive finite"),
        ("train.learning_rate=-1e-3", "train.learning_rate=-0.001 must be a positive finite"),
        ("train.learning_rate=.nan", "train.learning_rate=nan must be a positive finite"),
        ("train.learning_rate=.inf", "train.learning_rate=inf must be a positive finite"),
        ("train.log_every=0", "train.log_every=0 must be a whole number of at least 1"),
        ("train.eval_every=0", "train.eval_every=0 must be a whole number of at least 1"),
        ("train.checkpoint_every=-5", "train.checkpoint_every=-5 must be a whole number"),
        ("train.keep_checkpoints=0", "train.keep_checkpoints=0 must be a whole number"),
        ("train.divergence_patience=0", "train.divergence_patience=0 must be a whole number"),
        ("train.steps=0", "train.steps=0 must be a whole number"),
        ("train.steps=true", "train.steps: expected a number, got True"),
        ("train.batch_size=false", "train.batch_size: expected a number, got False"),
        ("train.grad_accum=yes", "train.grad_accum: expected a number, got True"),
        ("train.steps=2.5", "train.steps: cannot read 2.5 as int"),
        ("train.learning_rate=true", "train.learning_rate: expected a number"),
        ("data.family_weights={}", "give at least one family a positive weight"),
        ("data.family_weights={sequential: 0, direct: 0.0}", "at least one family a positive"),
        ("data.family_weights={sequential: 1, direct: -0.5}", "negative weights .*'direct'"),
        ("data.family_weights={sequential: abc}", "weights must be numbers"),
    ],
)
def test_bad_configs_fail_with_a_message(override, message):
    with pytest.raises(ValueError, match=message):
        load_config(None, [override])


def test_yaml_base_inheritance_and_missing_file(tmp_path):
    (tmp_path / "a.yaml").write_text("train:\n  steps: 11\n  batch_size: 8\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\ntrain:\n  steps: 12\n")
    cfg = load_config(tmp_path / "b.yaml")
    assert (cfg.train.steps, cfg.train.batch_size) == (12, 8)
    with pytest.raises(configlib.ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")


@pytest.mark.parametrize(
    "text, shown", [("- train\n- model\n", "['train', 'model']"), ("5\n", "got 5")]
)
def test_yaml_whose_top_level_is_not_a_mapping(tmp_path, text, shown):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(configlib.ConfigError, match="expected a mapping of config sections") as e:
        load_config(path)
    assert str(e.value).startswith(f"{path}:") and shown in str(e.value)


def test_base_chains_that_loop_name_the_cycle(tmp_path):
    (tmp_path / "self.yaml").write_text("base: self.yaml\n")
    with pytest.raises(configlib.ConfigError, match="the base: chain loops"):
        load_config(tmp_path / "self.yaml")
    (tmp_path / "a.yaml").write_text("base: b.yaml\ntrain: {steps: 3}\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\n")
    with pytest.raises(configlib.ConfigError) as err:
        load_config(tmp_path / "a.yaml")
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    assert f"({a} -> {b} -> {a})" in str(err.value)


def test_config_path_that_is_a_folder_or_binary(tmp_path):
    with pytest.raises(configlib.ConfigError, match="is a folder; give a YAML config file"):
        load_config(tmp_path)
    binary = tmp_path / "weights.bin"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff")
    with pytest.raises(configlib.ConfigError, match="not a text file") as err:
        load_config(binary)
    assert str(binary) in str(err.value)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            ["model.hidden_size=64", "model.num_heads=3"],
            "model.hidden_size=64 is not divisible by num_heads=3",
        ),
        (["model.dtype=bogus"], "model.dtype must be one of"),
        (["model.dropout_rate=1.5"], "model.dropout_rate must be in [0, 1)"),
        (["masking.mask_ratio=0"], "config.masking: mask_ratio must be in (0, 1]"),
        (["data.path=[unclosed"], "override 'data.path=[unclosed': cannot read the value"),
    ],
)
def test_section_checks_are_config_errors(overrides, message):
    with pytest.raises(configlib.ConfigError) as err:
        load_config(None, overrides)
    assert message in str(err.value)


def test_a_section_given_as_a_scalar(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train: 5\n")
    for overrides in ([], ["train.steps=3"]):
        with pytest.raises(configlib.ConfigError, match=r"config\.train: expected a mapping"):
            load_config(path, overrides)
    (tmp_path / "child.yaml").write_text("base: c.yaml\ntrain: {steps: 3}\n")
    with pytest.raises(configlib.ConfigError, match=r"config\.train: expected a mapping"):
        load_config(tmp_path / "child.yaml")
    with pytest.raises(configlib.ConfigError, match=r"config\.train: expected a mapping"):
        load_config(None, ["train=5", "train.steps=3"])


def test_run_dir_that_is_a_file(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("x")
    for run_dir in (notes, notes / "run"):
        with pytest.raises(configlib.ConfigError, match="notes.txt is a file; name a folder"):
            load_config(None, [f"train.run_dir={run_dir}"])


def test_help_lists_every_key_with_its_default():
    text = configlib.help_text(Config)
    for key in (
        "model.num_layers",
        "data.index",
        "masking.keep_span_order",
        "train.grad_accum",
        "mesh.tensor",
    ):
        assert key in text
    assert "default: 6000" in text


def test_dict_override_replaces_the_option_dict():
    """`data.index_options={}` clears a preset's semantic_id options (switching index kind)."""
    cfg = load_config(
        CONFIGS / "beauty_semantic.yaml", ["data.index=title", "data.index_options={}"]
    )
    assert cfg.data.index_options == {}
    cfg = load_config(CONFIGS / "beauty_semantic.yaml", ["data.index_options={levels: 2}"])
    assert cfg.data.index_options == {"levels": 2}


ALL_YAMLS = sorted(CONFIGS.rglob("*.yaml"))


def _strings(value):
    """Every string leaf of a config tree (dataclass dicts, option dicts, lists)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _strings(v)


def _outside_repo(value: str) -> bool:
    return value.startswith(("..", "/", "~"))


@pytest.mark.parametrize("path", ALL_YAMLS, ids=lambda p: str(p.relative_to(CONFIGS)))
def test_every_config_loads_and_stays_inside_the_repo(path):
    """Every YAML under configs/ loads and validates; no path in it (data.path, data_dir,
    init_from, item_features, index options...) leaves the repository, and its `base:` file
    is another config here."""
    cfg = load_config(path)
    outside = [s for s in _strings(dataclasses.asdict(cfg)) if _outside_repo(s)]
    assert not outside, f"{path.name}: paths outside the repository {outside}"
    raw = yaml.safe_load(path.read_text()) or {}
    if raw.get("base"):
        base = (path.parent / raw["base"]).resolve()
        assert base.is_relative_to(CONFIGS.resolve()) and base.is_file(), raw["base"]


@pytest.mark.parametrize("path", ALL_YAMLS, ids=lambda p: str(p.relative_to(CONFIGS)))
def test_no_config_sets_an_empty_mapping(path):
    """`base:` merges mappings, so `index_options: {}` in a child would not clear its parent's
    options: a config that needs other options inherits from a parent that does not set them."""

    def empty(node, where=""):
        for k, v in node.items():
            if isinstance(v, dict):
                yield from ([where + k] if not v else empty(v, f"{where}{k}."))

    assert not list(empty(yaml.safe_load(path.read_text()) or {}))


def test_overriding_one_builtin_key_keeps_the_rest_of_the_builtin_section():
    from recsys_jax.config import DEFAULT_MASKING, DEFAULT_MODEL

    cfg = load_config(None, ["model.num_layers=4", "masking.mask_ratio=0.3"])
    assert cfg.model == dataclasses.replace(DEFAULT_MODEL, num_layers=4)
    assert cfg.masking == dataclasses.replace(DEFAULT_MASKING, mask_ratio=0.3)
