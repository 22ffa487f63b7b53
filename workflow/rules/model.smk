# Training (ehpc-train, or torchrun with several processes) and evaluation against DFT on
# the held-out split, with the ML-vs-DFT band structure of a small periodic cell.


def train_command():
    """ehpc-train on one process, torchrun --standalone on several (one per GPU)."""
    n = config["train"]["processes"]
    if n > 1:
        return f"torchrun --standalone --nproc_per_node={n} -m ehpc.cli.train"
    return "ehpc-train"


def train_overrides():
    """train.set as ehpc-train options, exactly as check_train_config resolved them."""
    return " ".join(shlex.quote(f"--set={text}") for text in train_set_overrides(config))


def band_cell_input(wildcards):
    return [f"{WORK}/band_cell.extxyz"] if config["evaluate"]["band_structure"] else []


def band_args(wildcards, input):
    if not input.band_cell:
        return ""
    ev = config["evaluate"]
    kmesh = " ".join(str(k) for k in ev["band_kmesh"])
    path = f" --band-path {ev['band_path']}" if ev.get("band_path") else ""
    return (f"--band-structure {input.band_cell} --kmesh {kmesh} "
            f"--band-points {ev['band_points']}{path}")


rule train:
    input:
        rules.dataset.output,
    output:
        f"{WORK}/train/model.pt",
    params:
        command=train_command(),
        config=config["train"]["config"],
        overrides=train_overrides(),
        out_dir=f"{WORK}/train",
    log:
        f"{WORK}/logs/train.log",
    threads: config["train"]["threads"]
    resources:
        runtime=config["train"]["runtime"],
        mem_mb=16000,
    shell:
        # a run folder with a checkpoint is resumed where it stopped (see ehpc-train --resume)
        "resume=$([ -f {params.out_dir}/last.pt ] && echo --resume || true); "
        "OMP_NUM_THREADS={threads} {params.command} --config {params.config} "
        "--set data.path={input} {params.overrides} --out-dir {params.out_dir} $resume "
        "> {log} 2>&1"


rule band_cell:
    output:
        f"{WORK}/band_cell.extxyz",
    params:
        spec=spec_json(config["evaluate"]["band_structure"] or {}),
        spec_file=f"{WORK}/band_cell.json",
        hessian=hessian_args(),
    log:
        f"{WORK}/logs/band_cell.log",
    shell:
        STRUCTURES_FROM_SPEC


rule evaluate:
    input:
        model=rules.train.output,
        dataset=rules.dataset.output,
        band_cell=band_cell_input,
    output:
        metrics=f"{WORK}/evaluation/metrics.json",
        parity=f"{WORK}/plots/parity.png",
        **({"bands": f"{WORK}/plots/bands.png"} if config["evaluate"]["band_structure"] else {}),
    params:
        split=config["evaluate"]["split"],
        bands=band_args,
        out_dir=f"{WORK}/evaluation",
        plot_dir=f"{WORK}/plots",
    log:
        f"{WORK}/logs/evaluate.log",
    threads: config["evaluate"]["threads"]
    resources:
        runtime=120,
        mem_mb=8000,
    shell:
        "OMP_NUM_THREADS={threads} ehpc-evaluate --model {input.model} --dataset {input.dataset} "
        "--split {params.split} --out-dir {params.out_dir} --plot-dir {params.plot_dir} "
        "{params.bands} > {log} 2>&1"
