# MPI-sharded inference on a large structure: H and S over the ranks, E_F by inertia
# bisection, SLEPc eigenstates nearest E_F (ehpc-infer).  On a cluster the profile sets
# mpi=srun and the task count; on a laptop mpirun starts the ranks.


def infer_options():
    inf = config["infer"]
    args = [f"--nev {inf.get('nev', 20)}", f"--chunk-atoms {inf.get('chunk_atoms', 2000)}",
            f"--overlap-tol {inf.get('overlap_tol', 1e-10)}"]
    if inf.get("eigenvectors", False):
        args.append("--eigenvectors")
    return " ".join(args + [shlex.quote(o) for o in inf.get("petsc_options", [])])


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
    threads: config["infer"].get("ranks", 2)
    resources:
        mpi=config["infer"].get("mpi", "mpirun"),
        tasks=config["infer"].get("ranks", 2),
        runtime=config["infer"].get("runtime", 240),
        mem_mb=16000,
    shell:
        "OMP_NUM_THREADS=1 {resources.mpi} -n {resources.tasks} ehpc-infer --model {input.model} "
        "--structure {input.structure} --out {output} {params.options} > {log} 2>&1"
