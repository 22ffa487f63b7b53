# MPI-sharded inference on a large structure: H and S over the ranks, E_F and the SLEPc
# eigenstates nearest it from shift-and-invert windows placed by inertia (ehpc-infer).  On a cluster the profile sets
# mpi=srun and the task count; on a laptop mpirun starts the ranks.


def infer_options():
    inf = config["infer"]  # every default filled in from configs/schema.yaml
    args = [f"--nev {inf['nev']}", f"--chunk-atoms {inf['chunk_atoms']}",
            f"--overlap-tol {inf['overlap_tol']}", f"--fermi-method {inf['fermi_method']}"]
    if inf["eigenvectors"]:
        args.append("--eigenvectors")
    return " ".join(args + [shlex.quote(o) for o in inf["petsc_options"]])


rule infer_structure:
    output:
        f"{WORK}/infer/structure.extxyz",
    params:
        spec=spec_json(config["infer"]["structure"]),
        spec_file=f"{WORK}/infer/structure.json",
        hessian=hessian_args(),
    log:
        f"{WORK}/logs/infer_structure.log",
    shell:
        STRUCTURES_FROM_SPEC


rule infer:
    input:
        model=rules.train.output,
        structure=rules.infer_structure.output,
    output:
        f"{WORK}/infer/results.h5",
    params:
        options=infer_options(),
    log:
        f"{WORK}/logs/infer.log",
    threads: config["infer"]["ranks"]
    resources:
        mpi=config["infer"]["mpi"],
        tasks=config["infer"]["ranks"],
        runtime=config["infer"]["runtime"],
        mem_mb=16000,
    shell:
        "OMP_NUM_THREADS=1 {resources.mpi} -n {resources.tasks} ehpc-infer --model {input.model} "
        "--structure {input.structure} --out {output} {params.options} > {log} 2>&1"
