from dataclasses import dataclass, field
from typing import ClassVar, Literal

import pytest

from pretrain.runtime.config import from_dict, parse_override, resolve, to_yaml
from pretrain.runtime.errors import ConfigError


@dataclass
class Inner:
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.98)
    kind: Literal["a", "b"] = "a"


@dataclass
class Outer:
    name: str = "x"
    steps: int = 10
    path: str | None = None
    inner: Inner = field(default_factory=Inner)


@dataclass
class WithMapping:
    scales: dict[str, float] = field(default_factory=lambda: {"head": 10.0})
    inner: Inner = field(default_factory=Inner)


def test_a_free_form_mapping_is_replaced_whole_while_nested_configs_merge():
    out = resolve(WithMapping(), None, ["scales={proj: 2}", "inner.lr=1e-2"])
    assert out.scales == {"proj": 2} and out.inner == Inner(lr=1e-2)  # not {"head": 10, "proj": 2}, not an error


def test_yaml_round_trip_and_overrides(tmp_path):
    cfg = Outer()
    path = tmp_path / "c.yaml"
    path.write_text(to_yaml(cfg).replace("steps: 10", "steps: 20"))
    out = resolve(cfg, path, ["inner.lr=5e-4", "inner.betas=[0.8, 0.9]", "inner.kind=b", "path=/tmp/a"])
    assert out == Outer(name="x", steps=20, path="/tmp/a", inner=Inner(lr=5e-4, betas=(0.8, 0.9), kind="b"))


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("inner.lrr=1", "unknown config key 'inner.lrr'"),
        ("stepz=1", "unknown config key 'stepz'"),
        ("steps=abc", "config key 'steps': expected an integer"),
        ("inner.kind=c", "config key 'inner.kind': expected one of ['a', 'b']"),
        ("inner.betas=[1]", "config key 'inner.betas': expected 2 values"),
        ("noequals", "not of the form key=value"),
    ],
)
def test_bad_overrides_are_one_line_errors(override, message):
    with pytest.raises(ConfigError) as info:
        resolve(Outer(), None, [override])
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        resolve(Outer(), tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        resolve(Outer(), bad)


def test_int_accepts_integral_float_and_yaml_sci_notation():
    assert resolve(Outer(), None, ["steps=1e3", "inner.lr=5e-4"]) == Outer(steps=1000, inner=Inner(lr=5e-4))
    assert from_dict(Outer, {"steps": 1000.0}).steps == 1000
    assert parse_override("a.b=[1, 2]") == {"a": {"b": [1, 2]}}


@dataclass
class Data:
    KIND_PATHS: ClassVar[dict[str, tuple[str, ...]]] = {"train": ("shards", "list"), "root": ("list",)}
    kind: Literal["synthetic", "shards", "list"] = "synthetic"
    train: str = ""
    root: str | None = None


@dataclass
class Recipe:
    data: Data = field(default_factory=Data)


def test_a_path_the_chosen_kind_does_not_read_is_a_one_line_error(tmp_path):
    with pytest.raises(ConfigError) as info:
        resolve(Recipe(), None, ["data.train=/data/x.tar"])  # the recipe's kind is synthetic: it would be ignored
    assert str(info.value) == (
        "data.train: set to '/data/x.tar', but data.kind 'synthetic' does not read it "
        "(expected data.kind=shards or data.kind=list)"
    )
    with pytest.raises(ConfigError, match=r"^data.root: .*data.kind 'shards' does not read it"):
        resolve(Recipe(), None, ["data.kind=shards", "data.train=/x.tar", "data.root=/imgs"])
    file = tmp_path / "c.yaml"
    file.write_text("data:\n  train: /data/x.tar\n")
    with pytest.raises(ConfigError, match="^data.train: set to"):
        resolve(Recipe(), file)
    # setting the kind with the path works; a recipe's own path is not "set" when the kind changes
    assert resolve(Recipe(), None, ["data.kind=list", "data.train=/l.jsonl", "data.root=/i"]).data.train == "/l.jsonl"
    base = Recipe(Data(kind="shards", train="/data/{0..9}.tar"))
    assert resolve(base, None, ["data.kind=synthetic"]).data == Data(kind="synthetic", train="/data/{0..9}.tar")


def test_a_bare_off_is_the_word_for_a_literal_field():
    """YAML 1.1 reads `idf.mode=off` as false; a Literal field that has the word 'off' takes the word."""
    from pretrain.recipes import get_recipe

    assert resolve(get_recipe("superclass_tiny"), None, ["idf.mode=off"]).idf.mode == "off"
    with pytest.raises(ConfigError, match="expected one of"):
        resolve(get_recipe("superclass_tiny"), None, ["idf.mode=yes"])
