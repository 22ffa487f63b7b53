# The whole resolved config, checked when the Snakefile is read (so by `snakemake -n`
# too), before any job starts: the workflow keys against configs/schema.yaml, which also
# fills in every key left out (the schema is the one owner of the workflow's defaults),
# the functional, every structure spec, and the training config that train.config names
# with the train.set overrides applied.  A bad key or value ends Snakemake with one line
# naming it and exit status 2, never a traceback or a dump of the schema.
import importlib.util
import sys

SCHEMA = Path(workflow.basedir) / "configs" / "schema.yaml"


def refuse(message: str):
    """One line on stderr and exit status 2 (a user error, as the ehpc commands use)."""
    print(f"ehpc workflow: config error: {message}", file=sys.stderr)
    sys.exit(2)


def check_schema(config: dict) -> None:
    """The config against configs/schema.yaml, the schema's defaults filled in first (the
    rules read plain config[...] lookups); the most relevant error as one line."""
    from ehpc.config_schema import check_config

    message = check_config(config, SCHEMA)
    if message is not None:
        refuse(f"{message} (keys, types and defaults: {SCHEMA})")


def check_functional(config: dict) -> None:
    """dft.xc as libxc reads it; a misspelt functional would fail only inside the first SCF."""
    from ehpc.cli import CLIError, check_xc

    try:
        check_xc(config["dft"]["xc"], "dft.xc")
    except CLIError as err:
        refuse(str(err))


def check_structure_specs(config: dict) -> None:
    """Every structure spec of the config (cheap: nothing is built)."""
    from ehpc.sources import SourceError, check_spec

    specs = [("structures", s) for s in config["structures"]]
    specs += [("evaluate.band_structure", config["evaluate"]["band_structure"])]
    specs += [("infer.structure", config["infer"]["structure"])]
    for where, spec in specs:
        if spec is None:
            continue
        try:
            check_spec(spec)
        except SourceError as err:
            refuse(f"{where}: {err}")
        if spec.get("kind") == "file" and not Path(spec["path"]).is_file():
            refuse(f"{where}: structure file {spec['path']!r} not found")


def train_config_module():
    """ehpc/train/config.py on its own: it needs only YAML, while importing the ehpc.train
    package would load torch (seconds) in every Snakemake start, each cluster job's too."""
    name = "ehpc.train.config"
    if name not in sys.modules:
        package = importlib.util.find_spec("ehpc")
        path = Path(package.submodule_search_locations[0]) / "train" / "config.py"
        spec = importlib.util.spec_from_file_location(name, path)
        loaded = importlib.util.module_from_spec(spec)
        sys.modules[name] = loaded  # dataclasses resolve their annotations through it
        spec.loader.exec_module(loaded)
    return sys.modules[name]


def train_set_overrides(config: dict) -> list[str]:
    """train.set as ehpc-train ``--set KEY=VALUE`` strings (values as JSON, read as YAML)."""
    overrides = config["train"]["set"] or {}
    return [f"{key}={json.dumps(value)}" for key, value in overrides.items()]


def check_train_config(config: dict) -> None:
    """The training config the train job will resolve: the file, then train.set."""
    tc = train_config_module()
    path = config["train"]["config"]
    try:
        raw = tc.read_yaml(path)
        tc.from_dict(raw, path)
    except tc.ConfigError as err:
        refuse(f"train.config: {err}")
    for text in train_set_overrides(config):
        try:
            raw = tc.apply_overrides(raw, [text])
        except tc.ConfigError as err:
            refuse(f"train.set: {str(err).removeprefix(f'--set {text}: ')}")
    try:
        tc.from_dict(raw, "train.set")
    except tc.ConfigError as err:
        refuse(str(err))
