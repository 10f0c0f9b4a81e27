"""The run config: defaults < YAML < overrides, typed and validated with errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from rlal.config import RunConfig, load_config, save_config
from rlal.errors import RlalError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(text)
    return path


def test_defaults_are_valid_and_name_the_cpu_default_job():
    config = load_config()
    assert config.method == "dense"
    assert config.model.name == "resnet20"
    assert config.data.dataset == "fashion-mnist"


def test_yaml_values_override_defaults_and_overrides_override_yaml(tmp_path):
    path = write(tmp_path, "seed: 3\ntrain:\n  epochs: 7\noptim:\n  lr: 0.05\n")
    config = load_config(path, ["train.epochs=2", "data.train_subset=500"])
    assert config.seed == 3
    assert config.optim.lr == 0.05
    assert config.train.epochs == 2
    assert config.data.train_subset == 500


def test_an_integer_is_accepted_where_a_float_is_expected():
    assert load_config(None, ["optim.lr=1"]).optim.lr == 1.0
    assert isinstance(load_config(None, ["optim.lr=1"]).optim.lr, float)


def test_null_clears_an_optional_value():
    assert load_config(None, ["data.train_subset=100", "data.train_subset=null"]).data.train_subset is None


def test_on_and_off_choices_survive_yaml_reading_them_as_booleans(tmp_path):
    assert load_config(None, ["train.channels_last=on"]).train.channels_last == "on"
    assert load_config(write(tmp_path, "train:\n  channels_last: off\n")).train.channels_last == "off"
    assert load_config(None, ["train.amp=off"]).train.amp == "off"
    with pytest.raises(RlalError, match=r"train\.amp must be one of auto, bf16, off, got True"):
        load_config(None, ["train.amp=on"])  # amp has no "on" choice


def test_list_values_parse_from_yaml_text():
    assert load_config(None, ["optim.milestones=[0.3, 0.6]"]).optim.milestones == [0.3, 0.6]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.epoch=3", "unknown config key 'train.epoch'"),
        ("nosuch.key=1", "unknown config key 'nosuch.key'"),
        ("train.epochs=three", "train.epochs must be an integer"),
        ("train.epochs=0", "train.epochs must be >= 1"),
        ("optim.schedule=linear", "optim.schedule must be one of cosine, multistep, constant"),
        ("optim.nesterov=maybe", "optim.nesterov must be true or false"),
        ("optim.lr=-0.1", "optim.lr must be > 0"),
        ("optim.milestones=[0.5, 2]", "optim.milestones must be fractions in (0, 1)"),
        ("train.epochs", "is not of the form key=value"),
        ("data=3", "unknown config key 'data'"),
        ("search.subnet_weight=-0.5", "search.subnet_weight must be a number >= 0"),
        ("search.subnet_weight=.nan", "search.subnet_weight must be a number"),
    ],
)
def test_bad_overrides_raise_an_error_naming_the_key(override, message):
    with pytest.raises(RlalError, match=None) as info:
        load_config(None, [override])
    assert message in str(info.value)


def test_unknown_yaml_key_names_its_section(tmp_path):
    with pytest.raises(RlalError, match=r"unknown config key 'optim\.learning_rate'"):
        load_config(write(tmp_path, "optim:\n  learning_rate: 0.1\n"))


def test_invalid_yaml_and_missing_file_are_clear_errors(tmp_path):
    with pytest.raises(RlalError, match="is not valid YAML"):
        load_config(write(tmp_path, "train: [unclosed\n"))
    with pytest.raises(RlalError, match="config file not found"):
        load_config(tmp_path / "absent.yaml")
    with pytest.raises(RlalError, match="must hold a mapping"):
        load_config(write(tmp_path, "- 1\n- 2\n"))


def test_saved_config_loads_back_identical(tmp_path):
    config = load_config(None, ["seed=5", "optim.schedule=multistep", "data.dataset=cifar10"])
    save_config(config, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == config
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["seed"] == 5


def test_every_shipped_config_loads():
    folder = Path(__file__).resolve().parents[1] / "rlal" / "configs"
    shipped = sorted(folder.glob("*.yaml"))
    assert shipped, "no shipped configs found"
    for path in shipped:
        assert isinstance(load_config(path), RunConfig), path


def test_context_table_smaller_than_the_search_epochs_is_refused_naming_both_keys():
    settings = ["method=rlal", "train.epochs=10", "search.search_epochs=4", "agent.context.max_epochs=3"]
    with pytest.raises(RlalError) as info:
        load_config(None, settings)
    message = str(info.value)
    assert "agent.context.max_epochs (3)" in message and "search.search_epochs (4)" in message
    assert load_config(None, [*settings[:-1], "agent.context.max_epochs=4"]).agent.context.max_epochs == 4
    # Agents without the context model do not use the table.
    assert load_config(None, [*settings, "agent.kind=random"]).agent.kind == "random"
