# ehpc workflow: structures -> PySCF labels -> dataset (-> training -> evaluation ->
# sharded inference -> analysis as those stages land).
#
#   snakemake --cores all --configfile configs/default.yaml      # laptop
#   snakemake --profile cluster/slurm --configfile configs/...   # SLURM cluster
from snakemake.utils import min_version, validate

min_version("8.0")


configfile: "configs/default.yaml"


validate(config, "configs/schema.yaml")

WORK = config["workdir"].rstrip("/")
N_CHUNKS = config["datagen"].get("n_chunks", 1)


include: "workflow/rules/data.smk"


rule all:
    input:
        f"{WORK}/dataset.h5",
