# ehpc workflow: structures -> PySCF labels -> dataset -> training -> evaluation against
# DFT -> MPI-sharded inference on a large structure -> summary and plots.
#
#   snakemake --cores all --configfile configs/default.yaml      # laptop (./run.sh does this)
#   snakemake --profile cluster/slurm --configfile configs/...   # SLURM cluster
#
# Every output goes under config["workdir"]; every rule logs to <workdir>/logs/.
import json
import shlex
from pathlib import Path

from snakemake.utils import min_version

min_version("8.0")


# The embedded default applies only when no --configfile is given: a user's config
# replaces it as a whole rather than being merged key by key into it.
if not workflow.overwrite_configfiles:

    configfile: str(Path(workflow.basedir) / "configs" / "default.yaml")


include: "workflow/rules/config.smk"


check_schema(config)  # also fills in the schema's defaults
check_functional(config)
check_structure_specs(config)
check_train_config(config)

WORK = config["workdir"].rstrip("/")
N_CHUNKS = config["datagen"]["n_chunks"]


#: shell of every rule that turns a structure spec (params.spec) into an extxyz file
STRUCTURES_FROM_SPEC = (
    "mkdir -p $(dirname {params.spec_file}) && echo {params.spec} > {params.spec_file} && "
    "ehpc-structures --spec {params.spec_file} --out {output} {params.hessian} > {log} 2>&1"
)


def spec_json(spec) -> str:
    """A structure spec as shell-quoted JSON, file paths made absolute."""
    specs = spec if isinstance(spec, list) else [spec]
    specs = [dict(s, path=str(Path(s["path"]).resolve())) if s.get("path") else s for s in specs]
    return shlex.quote(json.dumps(specs))


include: "workflow/rules/data.smk"
include: "workflow/rules/model.smk"
include: "workflow/rules/inference.smk"
include: "workflow/rules/analysis.smk"


rule all:
    input:
        rules.report.output,
        rules.evaluate.output,
        f"{WORK}/infer/results.h5",
