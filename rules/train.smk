# Study cells: train a head on a backbone checkpoint (frozen or fine-tuned), then
# evaluate it on the validation split, once per seed. Paths: {task}/{backbone}/{mode}/{head}/seed{seed}.


rule train_head:
    input:
        checkpoint=f"{CKPTS}/{{backbone}}.pth",
        data=lambda wildcards: dataset_dir(config["tasks"][wildcards.task]["dataset"]),
    output:
        # state.pt is rewritten during training and kept on failure so a rerun resumes;
        # done.json marks a finished run.
        f"{RUNS}/{{task}}/{{backbone}}/{{mode}}/{{head}}/seed{{seed}}/done.json",
    log:
        f"{LOGS}/train/{{task}}/{{backbone}}/{{mode}}/{{head}}/seed{{seed}}.log",
    benchmark:
        f"{BENCHMARKS}/train/{{task}}/{{backbone}}/{{mode}}/{{head}}/seed{{seed}}.tsv"
    conda:
        "../envs/frozenbench.yaml"
    threads: COMPUTE["train"]["threads"]
    resources:
        **job_resources("train"),
    params:
        # from wildcards and config alone, never `input`: Snakemake compares a params function of
        # input with the last run's only after deciding what to run, so a changed schedule would
        # not retrain the cell
        spec=lambda wildcards: json_arg(cell_spec(wildcards)),
        run_dir=lambda wildcards: cell_dir(RUNS, wildcards),
        seed=lambda wildcards: int(wildcards.seed),
        # one process per GPU (torchrun on each node, DeepSpeed ZeRO across all of them)
        nproc=max(1, COMPUTE["train"]["gpus"]),
        nodes=COMPUTE["train"]["nodes"],
        gpus_per_node=COMPUTE["train"]["gpus"],
        device=COMPUTE["train"]["device"],
        workers=COMPUTE["train"]["workers"],
    shell:
        "frozenbench train --spec {params.spec} --checkpoint {input.checkpoint:q} --mode {wildcards.mode:q}"
        " --run-dir {params.run_dir:q} --seed {params.seed} --threads {threads} --nproc {params.nproc}"
        " --nodes {params.nodes} --gpus-per-node {params.gpus_per_node} --device {params.device:q} --workers {params.workers} > {log:q} 2>&1"


rule evaluate_head:
    input:
        done=f"{RUNS}/{{task}}/{{backbone}}/{{mode}}/{{head}}/seed{{seed}}/done.json",
        checkpoint=f"{CKPTS}/{{backbone}}.pth",
        data=lambda wildcards: dataset_dir(config["tasks"][wildcards.task]["dataset"]),
    output:
        f"{RESULTS}/{{task}}/{{backbone}}/{{mode}}/{{head}}/seed{{seed}}/metrics.json",
    log:
        f"{LOGS}/evaluate/{{task}}/{{backbone}}/{{mode}}/{{head}}/seed{{seed}}.log",
    benchmark:
        f"{BENCHMARKS}/evaluate/{{task}}/{{backbone}}/{{mode}}/{{head}}/seed{{seed}}.tsv"
    conda:
        "../envs/frozenbench.yaml"
    threads: COMPUTE["evaluate"]["threads"]
    resources:
        **job_resources("evaluate"),
    params:
        spec=lambda wildcards: json_arg(cell_spec(wildcards, evaluation=True)),
        run_dir=lambda wildcards: cell_dir(RUNS, wildcards),
        seed=lambda wildcards: int(wildcards.seed),
        labels=lambda wildcards: cell_labels(wildcards),
        device=COMPUTE["evaluate"]["device"],
        workers=COMPUTE["evaluate"]["workers"],
    shell:
        "frozenbench evaluate --spec {params.spec} --checkpoint {input.checkpoint:q} --mode {wildcards.mode:q}"
        " --run-dir {params.run_dir:q} --seed {params.seed} --threads {threads} --out {output:q}"
        " --device {params.device:q} --workers {params.workers}"
        " --label task={wildcards.task:q} --label backbone={wildcards.backbone:q} --label head={wildcards.head:q}"
        " {params.labels} > {log:q} 2>&1"


rule submit_test_dev:
    input:
        done=f"{RUNS}/{{task}}/{{backbone}}/{{mode}}/{{head}}/seed{{seed}}/done.json",
        checkpoint=f"{CKPTS}/{{backbone}}.pth",
        data=lambda wildcards: dataset_dir(config["tasks"][wildcards.task]["dataset"]),
    output:
        f"{RESULTS}/{{task}}/{{backbone}}/{{mode}}/{{head}}/seed{{seed}}/{SUBMISSION}",
    log:
        f"{LOGS}/submit/{{task}}/{{backbone}}/{{mode}}/{{head}}/seed{{seed}}.log",
    benchmark:
        f"{BENCHMARKS}/submit/{{task}}/{{backbone}}/{{mode}}/{{head}}/seed{{seed}}.tsv"
    conda:
        "../envs/frozenbench.yaml"
    threads: COMPUTE["evaluate"]["threads"]
    resources:
        **job_resources("evaluate"),
    params:
        # from wildcards and config alone, never `input`: Snakemake compares a params function of
        # input with the last run's only after deciding what to run, so a changed schedule would
        # not retrain the cell
        spec=lambda wildcards: json_arg(cell_spec(wildcards)),
        run_dir=lambda wildcards: cell_dir(RUNS, wildcards),
        seed=lambda wildcards: int(wildcards.seed),
        device=COMPUTE["evaluate"]["device"],
        workers=COMPUTE["evaluate"]["workers"],
    shell:
        "frozenbench submit --spec {params.spec} --checkpoint {input.checkpoint:q} --mode {wildcards.mode:q}"
        " --run-dir {params.run_dir:q} --seed {params.seed} --threads {threads} --out {output:q}"
        " --device {params.device:q} --workers {params.workers} > {log:q} 2>&1"


rule tables:
    input:
        all_cell_outputs(),
    output:
        # the CSV and PNG files are what `snakemake --report report.html` shows
        csv=[report(f"{TABLES}/{name}.csv", category="Tables", caption="../report/table.rst") for name in TABLE_NAMES],
        md=[f"{TABLES}/{name}.md" for name in TABLE_NAMES],
        tex=[f"{TABLES}/{name}.tex" for name in TABLE_NAMES],
        summary=f"{TABLES}/summary.json",
        figures=[
            report(f"{TABLES}/{name}.png", category="Figures", caption="../report/figure.rst") for name in FIGURE_NAMES
        ],
        # the training curves as data, one CSV per cell (dvc plots)
        curves=directory(f"{TABLES}/curves"),
    log:
        f"{LOGS}/tables.log",
    benchmark:
        f"{BENCHMARKS}/tables.tsv"
    conda:
        "../envs/frozenbench.yaml"
    params:
        out=lambda wildcards, output: os.path.dirname(output.csv[0]),
        plan=json_arg(tables_plan()),
    shell:
        "frozenbench tables --out {params.out:q} --plan {params.plan} {input:q} > {log:q} 2>&1"
