rule synth_dataset:
    output:
        directory(f"{DATA}/{{dataset}}"),
    params:
        spec=lambda wildcards: json_arg(config["datasets"][wildcards.dataset]),
    log:
        f"{LOGS}/data/synth_{{dataset}}.log",
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    shell:
        "frozenbench synth --spec {params.spec} --out {output} > {log} 2>&1"
