# Datasets: synthesized (the mini-study) or downloaded and prepared (the paper study).
# Both end in data/{dataset}/, in the layout the readers consume.


rule synth_dataset:
    output:
        directory(f"{DATA}/{{dataset}}"),
    log:
        f"{LOGS}/data/synth_{{dataset}}.log",
    benchmark:
        f"{BENCHMARKS}/data/synth_{{dataset}}.tsv"
    wildcard_constraints:
        dataset=names_alternation(SYNTH_DATASETS),
    conda:
        "../envs/frozenbench.yaml"
    threads: 1
    resources:
        **cpu_job_resources(mem_mb=2000, runtime=30),
    params:
        spec=lambda wildcards: json_arg(config["datasets"][wildcards.dataset]),
    shell:
        "frozenbench synth --spec {params.spec} --out {output:q} > {log:q} 2>&1"


rule download_dataset:
    # The output is a marker, not the download folder: Snakemake deletes a job's outputs before it
    # reruns it, and a timed-out 450 GB Kinetics download must resume, not restart from zero.
    output:
        f"{DOWNLOADS}/{{dataset}}.verified.json",
    log:
        f"{LOGS}/data/download_{{dataset}}.log",
    benchmark:
        f"{BENCHMARKS}/data/download_{{dataset}}.tsv"
    wildcard_constraints:
        dataset=names_alternation(DOWNLOAD_DATASETS),
    conda:
        "../envs/frozenbench.yaml"
    threads: 1
    resources:
        **cpu_job_resources(mem_mb=2000, runtime=24 * 60),
    params:
        # only what is downloaded: changing e.g. prepare options must not fetch the data again
        spec=lambda wildcards: json_arg(download_spec(wildcards.dataset)),
        folder=lambda wildcards: f"{DOWNLOADS}/{wildcards.dataset}",
        checksums=lambda wildcards: dataset_checksums(wildcards.dataset),
    shell:
        "frozenbench download --spec {params.spec} --out {params.folder:q} --checksums {params.checksums:q}"
        " --verified {output:q} > {log:q} 2>&1"


rule prepare_dataset:
    input:
        f"{DOWNLOADS}/{{dataset}}.verified.json",
    output:
        directory(f"{DATA}/{{dataset}}"),
    log:
        f"{LOGS}/data/prepare_{{dataset}}.log",
    benchmark:
        f"{BENCHMARKS}/data/prepare_{{dataset}}.tsv"
    wildcard_constraints:
        dataset=names_alternation(DOWNLOAD_DATASETS),
    conda:
        "../envs/frozenbench.yaml"
    threads: COMPUTE["prepare"]["threads"]
    resources:
        **job_resources("prepare"),
    params:
        spec=lambda wildcards: json_arg(config["datasets"][wildcards.dataset]),
        folder=lambda wildcards: f"{DOWNLOADS}/{wildcards.dataset}",
        checksums=lambda wildcards: dataset_checksums(wildcards.dataset),
    shell:
        "frozenbench prepare --spec {params.spec} --downloads {params.folder:q} --checksums {params.checksums:q}"
        " --verified {input:q} --out {output:q} --workers {threads} > {log:q} 2>&1"
