"""The training config: typed keys with defaults, clear errors, overrides, the saved YAML."""

import dataclasses

import pytest
import yaml

from ehpc.cli import train as cli
from ehpc.train.config import (
    Config,
    ConfigError,
    TrainConfig,
    check_value,
    dump_yaml,
    from_dict,
    key_table,
    load_config,
)


def test_defaults_are_the_documented_values_and_every_key_is_documented():
    config = load_config()
    # known answers (docs/TRAINING.md, configs/train_*.yaml rely on them): changing a
    # default must be deliberate
    assert (config.train.lr, config.train.epochs, config.train.batch_size) == (5.0e-3, 100, 4)
    assert (config.train.loss, config.train.optimizer, config.train.dtype) == \
        ("mse", "adam", "float32")
    assert config.train.band_weight == 0.0  # the band-energy loss is off unless asked for
    assert (config.train.band_window, config.train.band_kpoints) == (2.0, 4)
    assert config.train.max_minutes is None
    assert (config.data.train_split, config.data.val_split) == ("train", "val")
    assert config.model.n_layers == 2  # the one default: HamiltonianModel has none of its own
    table = key_table()
    for spec in table.values():
        assert spec.help, spec.key
        assert check_value(spec, spec.default) == spec.default, spec.key  # in its own range
    # the resolved YAML is itself a config that reads back to the same values
    assert from_dict(yaml.safe_load(dump_yaml(config))) == config


def test_file_then_dotted_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  lr: 1e-3\n  epochs: 7\nmodel:\n  elements: [H, O]\n")
    config = load_config(path, ["train.epochs=9", "log.progress=false", "train.grad_clip=null",
                                "model.cutoff=3.5"])
    # PyYAML reads "1e-3" as a string; the key is a number, so it means 10^-3
    assert isinstance(yaml.safe_load("1e-3"), str)
    assert config.train.lr == float("1e-3")
    assert config.train.epochs == 9  # the command line wins over the file
    assert config.model.elements == [1, 8]
    assert config.model.cutoff == 3.5
    assert config.log.progress is False and config.train.grad_clip is None
    assert config.train.batch_size == TrainConfig().batch_size  # untouched keys keep defaults


@pytest.mark.parametrize(("text", "message"), [
    ("train:\n  lrr: 0.1\n", "train.lrr: unknown key; did you mean 'train.lr'?"),
    ("trian:\n  lr: 0.1\n", "trian: unknown key; did you mean 'train'?"),
    ("train:\n  epochs: ten\n", "train.epochs: expected an integer, got 'ten'"),
    ("train:\n  epochs: 2.5\n", "train.epochs: expected an integer, got 2.5"),
    ("train:\n  deterministic: 1\n", "train.deterministic: expected true or false, got 1"),
    ("train:\n  loss: mea\n", "train.loss: 'mea' is not one of 'mse', 'mae'"),
    ("train:\n  lr: -1.0\n", "train.lr: must be > 0, got -1.0"),
    ("train:\n  ema_decay: 1.0\n", "train.ema_decay: must be < 1, got 1.0"),
    ("train: 3\n", "train is a section; expected a mapping"),
    ("model:\n  elements: [H, Qq]\n", "model.elements: 'Qq' is not an element"),
    ("- a\n- b\n", "a config is a mapping of sections"),
])
def test_bad_keys_and_values_name_the_key(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value).startswith(f"{path}: ")  # names the file
    assert message in str(err.value)


@pytest.mark.parametrize(("override", "message"), [
    ("train.lrr=0.1", "--set train.lrr=0.1: train.lrr: unknown key; did you mean 'train.lr'?"),
    ("lr=0.1", "lr: unknown key; did you mean 'train.lr'?"),
    ("train.lr", "expected KEY=VALUE"),
    ("train=1", "train is a section; set one of its keys"),
    ("train.max_orbitals=many", "train.max_orbitals: expected an integer or null, got 'many'"),
])
def test_bad_overrides(override, message):
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    assert str(err.value).startswith("--set ")
    assert message in str(err.value)


def test_cli_reports_a_config_error_in_one_line(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  batchsize: 4\n")
    assert cli.main(["--config", str(path), "--out-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [(f"ehpc-train: error: {path}: train.batchsize: unknown key; "
                    "did you mean 'train.batch_size'?")]


def test_print_config_shows_the_resolved_values(capsys):
    assert cli.main(["--print-config", "--set", "train.lr=2e-4", "--set", "data.path=x.h5"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["train"]["lr"] == 2e-4 and printed["data"]["path"] == "x.h5"
    assert set(printed) == {f.name for f in dataclasses.fields(Config)}


def test_resolved_config_is_saved_next_to_the_run(tmp_path, config_file):
    out = tmp_path / "run"
    code = cli.main(["--config", str(config_file), "--out-dir", str(out),
                     "--set", "train.epochs=1", "--set", "train.lr=2e-3"])
    assert code == 0
    saved = load_config(out / "config.yaml")
    assert saved.train.epochs == 1 and saved.train.lr == 2e-3
    assert saved.out_dir == str(out)
    assert saved == load_config(config_file, ["train.epochs=1", "train.lr=2e-3",
                                              f"out_dir={out}"])
