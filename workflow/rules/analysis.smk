# The figures and the one-page text summary of a run (ehpc-report).


rule report:
    input:
        evaluation=rules.evaluate.output.metrics,
        model=rules.train.output,
        inference=rules.infer.output,
    output:
        summary=f"{WORK}/summary.txt",
        dos=f"{WORK}/plots/dos.png",
        curve=f"{WORK}/plots/learning_curve.png",
    params:
        training=f"{WORK}/train",
        plot_dir=f"{WORK}/plots",
    log:
        f"{WORK}/logs/report.log",
    shell:
        "ehpc-report --evaluation {input.evaluation} --training {params.training} "
        "--inference {input.inference} --out-dir {params.plot_dir} --summary {output.summary} "
        "> {log} 2>&1"
