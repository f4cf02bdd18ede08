# Backbone checkpoints: pretrained inside the DAG (mini-study) or fetched and
# converted from a published release (paper study). Both end in checkpoints/{backbone}.pth.


rule pretrain_backbone:
    input:
        data=lambda wildcards: dataset_dir(pretrain_spec(wildcards.backbone)["dataset"]),
    output:
        checkpoint=f"{CKPTS}/{{backbone}}.pth",
        probe=f"{RUNS}/pretrain/{{backbone}}/probe.json",
    log:
        f"{LOGS}/pretrain/{{backbone}}.log",
    benchmark:
        f"{BENCHMARKS}/pretrain/{{backbone}}.tsv"
    wildcard_constraints:
        backbone=names_alternation(PRETRAINED_BACKBONES),
    conda:
        "../envs/frozenbench.yaml"
    threads: 2
    resources:
        **cpu_job_resources(mem_mb=4000, runtime=60),
    params:
        arch=lambda wildcards: config["backbones"][wildcards.backbone]["arch"],
        objective=lambda wildcards: pretrain_spec(wildcards.backbone)["objective"],
        options=lambda wildcards: json_arg(pretrain_spec(wildcards.backbone)["options"]),
        seed=config["seed"],
        run_dir=lambda wildcards: f"{RUNS}/pretrain/{wildcards.backbone}",
    shell:
        "frozenbench pretrain --arch {params.arch:q} --objective {params.objective:q} --data {input.data:q}"
        " --options {params.options} --seed {params.seed} --threads {threads}"
        " --out {output.checkpoint:q} --run-dir {params.run_dir:q} > {log:q} 2>&1"


rule fetch_checkpoint:
    # a marker output, as for datasets: the fetched file and its partial copy survive a rerun
    output:
        f"{DOWNLOADS}/checkpoints/{{backbone}}.verified.json",
    log:
        f"{LOGS}/checkpoints/fetch_{{backbone}}.log",
    benchmark:
        f"{BENCHMARKS}/checkpoints/fetch_{{backbone}}.tsv"
    wildcard_constraints:
        backbone=names_alternation(DOWNLOADED_CHECKPOINTS),
    conda:
        "../envs/frozenbench.yaml"
    threads: 1
    resources:
        **cpu_job_resources(mem_mb=1000, runtime=120),
    params:
        spec=lambda wildcards: json_arg(config["backbones"][wildcards.backbone]["checkpoint"]),
        folder=lambda wildcards: f"{DOWNLOADS}/checkpoints/{wildcards.backbone}",
        checksums=lambda wildcards: checkpoint_checksums(wildcards.backbone),
    shell:
        "frozenbench fetch-checkpoint --spec {params.spec} --out-dir {params.folder:q}"
        " --checksums {params.checksums:q} --verified {output:q} > {log:q} 2>&1"


rule synth_checkpoint:
    # seeded random weights in a published layout: the conversion below runs as on a real release
    output:
        f"{DOWNLOADS}/checkpoints/{{backbone}}/synth-{{layout}}.pth",
    log:
        f"{LOGS}/checkpoints/synth_{{backbone}}_{{layout}}.log",
    wildcard_constraints:
        backbone=names_alternation(SYNTH_CHECKPOINTS),
        layout="timm|dinov2",
    conda:
        "../envs/frozenbench.yaml"
    threads: 1
    resources:
        **cpu_job_resources(mem_mb=4000, runtime=10),
    params:
        arch=lambda wildcards: config["backbones"][wildcards.backbone]["arch"],
        seed=lambda wildcards: config["backbones"][wildcards.backbone]["checkpoint"]["synth"]["seed"],
    shell:
        "frozenbench synth-checkpoint --arch {params.arch:q} --layout {wildcards.layout:q} --seed {params.seed}"
        " --out {output:q} > {log:q} 2>&1"


rule convert_checkpoint:
    input:
        conversion_input,
    output:
        f"{CKPTS}/{{backbone}}.pth",
    log:
        f"{LOGS}/checkpoints/convert_{{backbone}}.log",
    benchmark:
        f"{BENCHMARKS}/checkpoints/convert_{{backbone}}.tsv"
    wildcard_constraints:
        backbone=names_alternation(PUBLISHED_BACKBONES),
    conda:
        "../envs/frozenbench.yaml"
    threads: 1
    resources:
        **cpu_job_resources(mem_mb=16000, runtime=30),
    params:
        arch=lambda wildcards: config["backbones"][wildcards.backbone]["arch"],
        layout=lambda wildcards: config["backbones"][wildcards.backbone]["checkpoint"]["layout"],
        src=lambda wildcards: checkpoint_source(wildcards.backbone),
        verify=lambda wildcards: verification_args(wildcards.backbone),
        meta=lambda wildcards: json_arg(checkpoint_meta(wildcards.backbone)),
    shell:
        # params.verify is built of shlex-quoted parts (rules/common.smk: verification_args)
        "frozenbench convert-checkpoint --src {params.src:q} --layout {params.layout:q} --arch {params.arch:q}"
        " {params.verify} --meta {params.meta} --out {output:q} > {log:q} 2>&1"


rule probe_report:
    input:
        unpack(lambda wildcards: {name: f"{RUNS}/pretrain/{name}/probe.json" for name in PRETRAINED_BACKBONES}),
    output:
        json=f"{RESULTS}/pretrain/probe.json",
        md=f"{RESULTS}/pretrain/probe.md",
    log:
        f"{LOGS}/pretrain/probe_report.log",
    benchmark:
        f"{BENCHMARKS}/pretrain/probe_report.tsv"
    conda:
        "../envs/frozenbench.yaml"
    params:
        pairs=lambda wildcards, input: " ".join(shlex.quote(f"{name}={path}") for name, path in input.items()),
    shell:
        "frozenbench probe-report {params.pairs} --out-json {output.json:q} --out-md {output.md:q} > {log:q} 2>&1"
