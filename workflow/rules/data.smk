# Data generation: one PySCF job per chunk of structures.  Each structure's labels are
# written as they complete, so a killed chunk resumes where it stopped.
def hessian_args():
    """Level of theory of the normal-mode Hessians of molecular conformers."""
    dft = config["dft"]
    pseudo = f" --pseudo {dft['pseudo']}" if dft["pseudo"] else ""
    return f"--basis {dft['basis']} --xc {dft['xc']}{pseudo}"


def dft_args():
    dft = config["dft"]  # every default filled in from configs/schema.yaml
    args = [f"--basis {dft['basis']}", f"--xc {dft['xc']}", f"--cutoff {config['cutoff']}"]
    if dft["pseudo"]:
        args.append(f"--pseudo {dft['pseudo']}")
    args.append("--kmesh " + " ".join(str(k) for k in dft["kmesh"]))
    args.append(f"--conv-tol {dft['conv_tol']} --max-cycle {dft['max_cycle']}")
    if dft["smearing"]:
        args.append(f"--smearing {dft['smearing']['method']}:{dft['smearing']['width']}")
    args.append(f"--floor-tol {dft['floor_tol']}")
    if dft["allow_large_floor"]:
        args.append("--allow-large-floor")
    return " ".join(args)


def split_arg():
    split = config["split"]
    parts = [f"{k}={split[k]}" for k in ("train", "val", "test") if k in split]
    return ",".join(parts) + f" --seed {split['seed']}"


rule structures:
    output:
        f"{WORK}/structures.extxyz",
    params:
        spec=spec_json(config["structures"]),
        spec_file=f"{WORK}/structures.json",
        hessian=hessian_args(),
    log:
        f"{WORK}/logs/structures.log",
    shell:
        STRUCTURES_FROM_SPEC


rule labels:
    input:
        rules.structures.output,
    output:
        f"{WORK}/labels/chunk_{{chunk}}.done",
    params:
        dft=dft_args(),
        n_chunks=N_CHUNKS,
        out_dir=f"{WORK}/labels",
    log:
        f"{WORK}/logs/labels_{{chunk}}.log",
    resources:
        runtime=240,
        mem_mb=8000,
    threads: 1  # chunks run side by side; a cluster profile may raise it
    shell:
        "OMP_NUM_THREADS={threads} ehpc-datagen --structures {input} {params.dft} "
        "--out-dir {params.out_dir} --chunk {wildcards.chunk} --n-chunks {params.n_chunks} "
        "--summary {output} > {log} 2>&1"


rule dataset:
    input:
        expand(f"{WORK}/labels/chunk_{{chunk}}.done", chunk=range(N_CHUNKS)),
    output:
        f"{WORK}/dataset.h5",
    params:
        labels=f"{WORK}/labels",
        split=split_arg(),
    log:
        f"{WORK}/logs/dataset.log",
    shell:
        "ehpc-dataset --labels {params.labels} --out {output} --split {params.split} > {log} 2>&1"
