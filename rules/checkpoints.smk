# Backbone checkpoints: pretrained inside the DAG (mini-study) or fetched and
# converted from a published release (paper study). Both end in checkpoints/{backbone}.pth.


rule pretrain_backbone:
    input:
        data=lambda wildcards: dataset_dir(pretrain_spec(wildcards.backbone)["dataset"]),
    output:
        checkpoint=f"{CKPTS}/{{backbone}}.pth",
        probe=f"{RUNS}/pretrain/{{backbone}}/probe.json",
    wildcard_constraints:
        backbone=names_alternation(PRETRAINED_BACKBONES),
    params:
        arch=lambda wildcards: config["backbones"][wildcards.backbone]["arch"],
        task=lambda wildcards: pretrain_spec(wildcards.backbone)["task"],
        options=lambda wildcards: json_arg(pretrain_spec(wildcards.backbone)["options"]),
        seed=config["seed"],
        run_dir=lambda wildcards: f"{RUNS}/pretrain/{wildcards.backbone}",
    conda:
        "../envs/frozenbench.yaml"
    log:
        f"{LOGS}/pretrain/{{backbone}}.log",
    benchmark:
        f"{BENCHMARKS}/pretrain/{{backbone}}.tsv"
    threads: 2
    resources:
        **cpu_job_resources(mem_mb=4000, runtime=60),
    shell:
        "frozenbench pretrain --arch {params.arch} --task {params.task} --data {input.data}"
        " --options {params.options} --seed {params.seed} --threads {threads}"
        " --out {output.checkpoint} --run-dir {params.run_dir} > {log} 2>&1"


rule fetch_checkpoint:
    output:
        directory(f"{DOWNLOADS}/checkpoints/{{backbone}}"),
    wildcard_constraints:
        backbone=names_alternation(PUBLISHED_BACKBONES),
    params:
        spec=lambda wildcards: json_arg(config["backbones"][wildcards.backbone]["checkpoint"]),
    conda:
        "../envs/frozenbench.yaml"
    log:
        f"{LOGS}/checkpoints/fetch_{{backbone}}.log",
    benchmark:
        f"{BENCHMARKS}/checkpoints/fetch_{{backbone}}.tsv",
    threads: 1
    resources:
        **cpu_job_resources(mem_mb=1000, runtime=120),
    shell:
        "frozenbench fetch-checkpoint --spec {params.spec} --out-dir {output} > {log} 2>&1"


rule convert_checkpoint:
    input:
        f"{DOWNLOADS}/checkpoints/{{backbone}}",
    output:
        f"{CKPTS}/{{backbone}}.pth",
    wildcard_constraints:
        backbone=names_alternation(PUBLISHED_BACKBONES),
    params:
        arch=lambda wildcards: config["backbones"][wildcards.backbone]["arch"],
        layout=lambda wildcards: config["backbones"][wildcards.backbone]["checkpoint"]["layout"],
        filename=lambda wildcards: config["backbones"][wildcards.backbone]["checkpoint"]["filename"],
        meta=lambda wildcards: json_arg(checkpoint_meta(wildcards.backbone)),
    conda:
        "../envs/frozenbench.yaml"
    log:
        f"{LOGS}/checkpoints/convert_{{backbone}}.log",
    benchmark:
        f"{BENCHMARKS}/checkpoints/convert_{{backbone}}.tsv",
    threads: 1
    resources:
        **cpu_job_resources(mem_mb=16000, runtime=30),
    shell:
        "frozenbench convert-checkpoint --src {input}/{params.filename} --layout {params.layout}"
        " --arch {params.arch} --meta {params.meta} --out {output} > {log} 2>&1"


rule probe_report:
    input:
        unpack(lambda wildcards: {name: f"{RUNS}/pretrain/{name}/probe.json" for name in PRETRAINED_BACKBONES}),
    output:
        json=f"{RESULTS}/pretrain/probe.json",
        md=f"{RESULTS}/pretrain/probe.md",
    params:
        pairs=lambda wildcards, input: " ".join(f"{name}={path}" for name, path in input.items()),
    conda:
        "../envs/frozenbench.yaml"
    log:
        f"{LOGS}/pretrain/probe_report.log",
    benchmark:
        f"{BENCHMARKS}/pretrain/probe_report.tsv",
    shell:
        "frozenbench probe-report {params.pairs} --out-json {output.json} --out-md {output.md} > {log} 2>&1"
