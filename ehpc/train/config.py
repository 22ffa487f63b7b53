"""The training configuration: every key, its type, its default, and checks on the way in.

A config is YAML with four sections (``data``, ``model``, ``train``, ``log``) plus
``out_dir``.  Keys are checked when read, so a typo fails before any work starts with
one line naming the key and the closest known one::

    train.lrr: unknown key; did you mean 'train.lr'?

Command-line overrides use dotted keys with YAML values (``--set train.lr=1e-3``,
``--set model.elements=[H,O]``).  The resolved config is written next to the run as
``config.yaml`` and stored in every checkpoint.

PyYAML reads ``1e-3`` (no decimal point) as a string; number-valued keys accept such
strings, so a config means what it looks like it means.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from ..atomic import write_text
from ..errors import UserError

#: the sections of a config, in the order they are written
SECTIONS = ("data", "model", "train", "log")


class ConfigError(UserError, ValueError):
    """A config key that is unknown, mistyped or out of range (the message names it)."""


def _opt(default, help: str, **checks) -> Any:
    """A config field with a help text and optional range checks (``min``, ``gt``, ``lt``)."""
    return field(default=default, metadata={"help": help, **checks})


@dataclass
class DataConfig:
    """Where the labelled structures come from."""

    path: str | None = _opt(None, "block-sparse HDF5 dataset from ehpc-dataset")
    train_split: str = _opt("train", "subset of /splits used for training")
    val_split: str | None = _opt("val", "subset used for validation; null: none")
    statistics_structures: int = _opt(
        1000, "training structures (the first, by name) used to fit readout scales", min=1)
    cache: bool = _opt(True, "keep each rank's graphs in memory after first use")


@dataclass
class ModelConfig:
    """Architecture of a new model, or the model file to fine-tune."""

    cutoff: float | None = _opt(None, "edge cutoff in Å; null: the labels' pair cutoff", gt=0)
    elements: list[int] | None = _opt(
        None, "atomic numbers or symbols; null: those in the train and val splits")
    n_layers: int = _opt(2, "message-passing layers", min=0)
    channels: int = _opt(16, "multiplicity of each hidden irrep", min=1)
    lmax: int | None = _opt(None, "highest hidden L; null: what the basis needs", min=0)
    sh_lmax: int | None = _opt(None, "highest spherical harmonic of edges; null: lmax", min=0)
    n_radial: int = _opt(8, "Bessel functions of the radial basis", min=1)
    radial_hidden: int = _opt(64, "width of the radial networks", min=1)
    # p = 6 keeps the first p - 1 derivatives of the polynomial envelope continuous
    envelope_power: int = _opt(6, "order of the polynomial cutoff envelope (envelope_width: null)",
                               min=1)
    # DFT's own Si blocks (gth-dzvp-molopt-sr, 9 Å) times the switch give bands 1.3 meV
    # (MAE) from the SCF's at 0.5 Å, 2.5 meV at 1 Å; times the polynomial envelope, 1.7 eV
    # (bench/envelope_floor.py, docs/BENCHMARKS.md)
    envelope_width: float | None = _opt(
        0.5, "Å over which the envelope falls to 0 at the cutoff; null: polynomial over the "
        "whole cutoff, which damps a block at 0.9 cutoff to 4 %", gt=0)
    # the Si blocks of gth-dzvp-molopt-sr fall from 0.7 eV (2.35 Å) to 1 meV (8.5 Å): on one
    # scale the far shells, half of all pairs, were fitted to 20 times their own size
    block_decay: bool = _opt(
        True, "scale off-site blocks by exp(quadratic in r) fitted to the training blocks' "
        "size against distance, so every distance shell is learned to the same relative error")
    # silicon, gth-dzvp-molopt-sr: H - T - v S is 5-20 times smaller than H beyond 5 Å, and
    # the same 3-minute run reached 2.6 instead of 8.8 meV held-out H MAE with it
    # (docs/BENCHMARKS.md, "The kinetic baseline")
    baseline: Literal["none", "kinetic"] = _opt(
        "none", "kinetic: predict H - T - v S and add back the exact kinetic (T) and overlap "
        "(S) blocks, with v one potential fitted to the training blocks (ehpc/nn/baseline.py)")
    init: str | None = _opt(
        None, "fine-tune this saved model; its architecture replaces the keys above")

    def hparams(self) -> dict[str, Any]:
        """The keyword hyper-parameters of ``HamiltonianModel``: every key but its positional
        arguments (cutoff, elements, n_layers) and the fine-tuning source."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.name not in _NOT_HPARAMS}


#: ModelConfig keys that are not keyword hyper-parameters of the network
_NOT_HPARAMS = ("cutoff", "elements", "n_layers", "init")


@dataclass
class TrainConfig:
    """Optimisation, precision, checkpoints and stopping."""

    epochs: int = _opt(100, "passes over the training split", min=1)
    batch_size: int = _opt(4, "structures per rank per step (global batch: x ranks)", min=1)
    max_orbitals: int | None = _opt(
        None, "cap on orbitals per rank per step; a larger structure goes alone", min=1)
    val_batch_size: int | None = _opt(None, "structures per validation batch; null: batch_size",
                                      min=1)
    optimizer: Literal["adam", "adamw", "lbfgs", "lm"] = _opt(
        "adam", "optimizer; lbfgs and lm (Levenberg-Marquardt, mse only): one process, full "
        "batch, for small float64 fits")
    lr: float = _opt(5.0e-3, "peak learning rate", gt=0)
    lr_min: float = _opt(1.0e-5, "floor of the decayed learning rate", min=0)
    weight_decay: float = _opt(0.0, "L2 (adam) or decoupled (adamw) weight decay", min=0)
    schedule: Literal["cosine", "plateau", "constant"] = _opt(
        "cosine", "decay after warm-up: cosine to lr_min at the last epoch, or on plateau")
    warmup_steps: int = _opt(0, "optimizer steps of linear warm-up", min=0)
    plateau_factor: float = _opt(0.5, "lr multiplier when the monitored loss stalls", gt=0, lt=1)
    plateau_patience: int = _opt(10, "evaluations without improvement before a cut", min=0)
    loss: Literal["mse", "mae"] = _opt("mse", "error of matrix elements: squared or absolute")
    diag_weight: float = _opt(1.0, "loss weight of on-site blocks relative to off-site", gt=0)
    band_weight: float = _opt(
        0.0, "weight of the band-energy loss (eigenvalues of the predicted H(k), S(k) against "
        "the DFT ones, float64); 0: off", min=0)
    band_window: float = _opt(2.0, "crystals: bands within this many eV of E_F enter the "
                              "band loss", gt=0)
    band_kpoints: int = _opt(4, "crystals: Γ plus points of the SCF mesh (refined by a whole "
                             "factor when it holds fewer), this many in all",
                             min=1)
    band_virtual: int = _opt(4, "molecules: empty orbitals above the occupied ones in the "
                             "band loss", min=0)
    max_minutes: float | None = _opt(
        None, "wall-time budget: stop cleanly (checkpoint, model.pt) before an epoch would "
        "pass it; null: none", gt=0)
    grad_clip: float | None = _opt(10.0, "largest gradient norm; null: no clipping", gt=0)
    ema_decay: float | None = _opt(
        0.99, "exponential moving average of weights, used to validate and export; null: off",
        min=0, lt=1)
    patience: int | None = _opt(None, "early stopping: evaluations without improvement", min=1)
    eval_every: int = _opt(1, "validate every this many epochs (and at the last)", min=1)
    checkpoint_every: int = _opt(1, "write last.pt every this many epochs (and at the last)",
                                 min=1)
    export: Literal["best", "last"] = _opt(
        "best", "which EMA weights become model.pt: best validation or the last epoch")
    readout_fit: bool = _opt(
        False, "after training, solve the readout weights of model.pt by least squares on the "
        "training split (features fixed); kept when the validation loss drops. Costs one "
        "readout pass per readout weight and training structure")
    readout_kpoints: int = _opt(
        0, "with train.readout_fit: also fit the bands of the band window (the window block "
        "of H(k) in the DFT eigenbasis) at this many k-points per training structure (the "
        "SCF mesh, refined as for train.band_kpoints; molecules: Γ), its weight chosen by the "
        "validation eigenvalue error there; 0: matrix elements only", min=0)
    dtype: Literal["float32", "float64"] = _opt("float32", "floating type of the network")
    seed: int = _opt(0, "seeds weights and batch order (the same on every rank)", min=0)
    deterministic: bool = _opt(False, "torch.use_deterministic_algorithms: bit-exact repeats")
    device: Literal["auto", "cpu", "cuda"] = _opt("auto", "auto: cuda:LOCAL_RANK when present")


@dataclass
class LogConfig:
    """What rank 0 reports."""

    progress: bool = _opt(True, "tqdm bar per epoch (only when stderr is a terminal)")
    tensorboard: bool = _opt(True, "TensorBoard events in OUT/tensorboard when installed")
    step_metrics: bool = _opt(False, "also write one metrics.jsonl row per optimizer step")
    level: Literal["debug", "info", "warning"] = _opt("info", "log level of OUT/train.log")


@dataclass
class Config:
    """A complete training config."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    log: LogConfig = field(default_factory=LogConfig)
    out_dir: str = _opt("train_run", "run folder: checkpoints, metrics, model.pt")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def get(self, key: str) -> Any:
        """The value of a dotted key, e.g. ``config.get("train.lr")``."""
        value: Any = self
        for part in key.split("."):
            value = getattr(value, part)
        return value


# ---------------------------------------------------------------------- key table


@dataclass(frozen=True)
class KeySpec:
    """One leaf key: its type annotation, default and checks."""

    key: str
    type: Any
    default: Any
    help: str
    checks: dict


def key_table() -> dict[str, KeySpec]:
    """Every dotted leaf key of :class:`Config`."""
    table: dict[str, KeySpec] = {}

    def walk(cls, prefix: str) -> None:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            key = f"{prefix}{f.name}"
            if dataclasses.is_dataclass(hints[f.name]):
                walk(hints[f.name], key + ".")
                continue
            checks = {k: v for k, v in f.metadata.items() if k != "help"}
            table[key] = KeySpec(key, hints[f.name], f.default, f.metadata.get("help", ""), checks)

    walk(Config, "")
    return table


def suggest(key: str, known) -> str:
    """``"; did you mean 'x'?"`` for the closest known key, or ``""``."""
    known = list(known)
    match = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    if not match:
        leaf = key.rsplit(".", 1)[-1]
        by_leaf = {k.rsplit(".", 1)[-1]: k for k in known}
        close = difflib.get_close_matches(leaf, list(by_leaf), n=1, cutoff=0.75)
        match = [by_leaf[close[0]]] if close else []
    return f"; did you mean {match[0]!r}?" if match else ""


# ---------------------------------------------------------------------- values


def _type_name(tp) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "null"
    if origin is list:
        return f"a list of {_type_name(typing.get_args(tp)[0])}"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}[tp]


def _coerce(value, tp, key: str):
    """``value`` as type ``tp``, or raise ConfigError naming ``key``."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        null = value is None or (isinstance(value, str) and value.lower() in ("none", "null"))
        if null and type(None) in options:
            return None
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, key)
            except _Mistyped:
                continue
        raise _mistyped(key, value, tp)
    if origin is Literal:
        choices = typing.get_args(tp)
        if value in choices:
            return value
        hint = suggest(str(value), [str(c) for c in choices]) if isinstance(value, str) else ""
        raise ConfigError(f"{key}: {value!r} is not {_type_name(tp)}{hint}")
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise _mistyped(key, value, tp)
        (item,) = typing.get_args(tp)
        if key == "model.elements":
            return [_element(v, key) for v in value]
        return [_coerce(v, item, key) for v in value]
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _mistyped(key, value, tp)
    if tp is int:
        if isinstance(value, bool):
            raise _mistyped(key, value, tp)
        if isinstance(value, int):
            return value
        number = _number(value)
        if number is not None and math.isfinite(number) and float(number).is_integer():
            return int(number)
        raise _mistyped(key, value, tp)
    if tp is float:
        if isinstance(value, bool):
            raise _mistyped(key, value, tp)
        number = _number(value)
        if number is None:
            raise _mistyped(key, value, tp)
        if not math.isfinite(number):
            raise ConfigError(f"{key}: {value!r} is not a finite number")
        return float(number)
    if tp is str:
        if isinstance(value, str):
            return value
        raise _mistyped(key, value, tp)
    raise TypeError(f"config key {key}: unsupported annotation {tp!r}")


def _number(value) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _element(value, key: str) -> int:
    from ase.data import atomic_numbers, chemical_symbols

    if isinstance(value, int) and not isinstance(value, bool) and 0 < value < len(chemical_symbols):
        return value
    if isinstance(value, str) and value in atomic_numbers and atomic_numbers[value] > 0:
        return atomic_numbers[value]
    raise ConfigError(f"{key}: {value!r} is not an element (atomic number or symbol like 'O')")


class _Mistyped(ConfigError):
    """A value of the wrong type (as opposed to the right type out of range)."""


def _mistyped(key: str, value, tp) -> ConfigError:
    return _Mistyped(f"{key}: expected {_type_name(tp)}, got {value!r} "
                       f"({type(value).__name__})")


def check_value(spec: KeySpec, value):
    """``value`` converted to the key's type and checked against its range."""
    coerced = _coerce(value, spec.type, spec.key)
    _check_range(spec, coerced)
    return coerced


def _check_range(spec: KeySpec, value) -> None:
    if value is None or isinstance(value, (str, list, bool)):
        return
    checks = spec.checks
    if "min" in checks and value < checks["min"]:
        raise ConfigError(f"{spec.key}: must be >= {checks['min']}, got {value!r}")
    if "gt" in checks and not value > checks["gt"]:
        raise ConfigError(f"{spec.key}: must be > {checks['gt']}, got {value!r}")
    if "lt" in checks and not value < checks["lt"]:
        raise ConfigError(f"{spec.key}: must be < {checks['lt']}, got {value!r}")


# ---------------------------------------------------------------------- building


def from_dict(raw: dict | None, where: str = "config") -> Config:
    """A checked :class:`Config` from nested plain values (missing keys take defaults).

    Args:
        raw: nested mapping as read from YAML.
        where: what ``raw`` came from, for error messages (a file name).

    Raises:
        ConfigError: an unknown key (with the closest known one), a value of the
            wrong type or out of range.
    """
    raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: a config is a mapping of sections, got {type(raw).__name__}")
    table = key_table()
    values: dict[str, Any] = {}
    for key, value in _flatten(raw, table, where).items():
        try:
            values[key] = check_value(table[key], value)
        except ConfigError as err:
            raise ConfigError(f"{where}: {err}") from None
    sections = {}
    for section in SECTIONS:
        cls = typing.get_type_hints(Config)[section]
        prefix = section + "."
        sections[section] = cls(**{k[len(prefix):]: v for k, v in values.items()
                                   if k.startswith(prefix)})
    extra = {k: v for k, v in values.items() if "." not in k}
    return Config(**sections, **extra)


def _flatten(raw: dict, table: dict[str, KeySpec], where: str, prefix: str = "") -> dict:
    out = {}
    for name, value in raw.items():
        key = f"{prefix}{name}"
        if not isinstance(name, str):
            raise ConfigError(f"{where}: key {name!r} is not a string")
        if key in table:
            out[key] = value
        elif any(k.startswith(key + ".") for k in table):
            if not isinstance(value, dict):
                raise ConfigError(f"{where}: {key} is a section; expected a mapping of keys, "
                                  f"got {value!r}")
            out.update(_flatten(value, table, where, key + "."))
        else:
            known = list(table) + list(SECTIONS)
            raise ConfigError(f"{where}: {key}: unknown key{suggest(key, known)}")
    return out


def parse_override(text: str) -> tuple[str, Any]:
    """``"train.lr=1e-3"`` -> ``("train.lr", "1e-3")``; the value is read as YAML."""
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE, e.g. --set train.lr=1e-3")
    try:
        parsed = yaml.safe_load(value) if value.strip() else None
    except yaml.YAMLError:
        parsed = value
    return key, parsed


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """A copy of nested ``raw`` with each ``KEY=VALUE`` set (dotted keys make sections)."""
    import copy

    raw = copy.deepcopy(raw)
    table = key_table()
    for text in overrides:
        key, value = parse_override(text)
        if key in SECTIONS:
            raise ConfigError(f"--set {text}: {key} is a section; set one of its keys, "
                              f"e.g. --set {key}.{_first_key(table, key)}=...")
        if key not in table:
            raise ConfigError(f"--set {text}: {key}: unknown key"
                              f"{suggest(key, list(table) + list(SECTIONS))}")
        try:
            check_value(table[key], value)
        except ConfigError as err:
            raise ConfigError(f"--set {text}: {err}") from None
        node = raw
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"--set {text}: {part} is not a section in the config file")
            node = child
        node[parts[-1]] = value
    return raw


def _first_key(table: dict[str, KeySpec], section: str) -> str:
    return next(k for k in table if k.startswith(section + ".")).split(".", 1)[1]


def read_yaml(path: str | Path) -> dict:
    """The mapping in a YAML config file (empty file: empty mapping)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except OSError as err:
        raise ConfigError(f"{path}: cannot read config file ({err.strerror})") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}: not valid YAML{where}") from None
    if raw is not None and not isinstance(raw, dict):
        raise ConfigError(f"{path}: a config is a mapping of sections, got {type(raw).__name__}")
    return raw or {}


def load_config(path: str | Path | None = None, overrides: list[str] = (),
                base: dict | None = None) -> Config:
    """Defaults, then ``base``, then the YAML file at ``path``, then ``--set`` overrides.

    Args:
        path: YAML config file, or None for defaults only.
        overrides: ``KEY=VALUE`` strings with dotted keys.
        base: nested values applied before the file (e.g. a checkpoint's config).
    """
    raw = dict(base or {})
    where = "config"
    if path is not None:
        raw = _merge(raw, read_yaml(path))
        where = str(path)
    from_dict(raw, where)  # report the file's own errors against the file
    return from_dict(apply_overrides(raw, list(overrides)), where)


def _merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for key, value in b.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def differences(a: Config, b: Config) -> list[str]:
    """Dotted keys whose values differ between two configs."""
    return [key for key in key_table() if a.get(key) != b.get(key)]


def dump_yaml(config: Config) -> str:
    """The resolved config as YAML with one ``# help`` comment per key."""
    table = key_table()
    lines = ["# ehpc-train resolved config: every key, defaults included"]
    values = config.to_dict()
    for section in SECTIONS:
        lines.append(f"{section}:")
        for name, value in values[section].items():
            text = yaml.safe_dump(value, default_flow_style=True, width=1000).strip()
            text = text.removesuffix("\n...").removesuffix("...").strip()
            lines.append(f"  {name}: {text}  # {table[f'{section}.{name}'].help}")
    out_dir = yaml.safe_dump(values["out_dir"], default_flow_style=True).strip()
    out_dir = out_dir.removesuffix("...").strip()
    lines.append(f"out_dir: {out_dir}  # {table['out_dir'].help}")
    return "\n".join(lines) + "\n"


def save_config(config: Config, path: str | Path) -> Path:
    """Write :func:`dump_yaml` atomically (temporary file, then rename)."""
    return write_text(path, dump_yaml(config))
