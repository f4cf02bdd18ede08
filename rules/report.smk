# The study report: tables, figures and pretraining probes on one self-contained HTML page
# (no snakemake metadata). `snakemake --report report.html` builds snakemake's own report
# with provenance; both show the same tables and figures.


rule study_report:
    input:
        tables=all_table_outputs(),
        probe=[f"{RESULTS}/pretrain/probe.md"] if PRETRAINED_BACKBONES else [],
    output:
        study_report_output(),
    log:
        f"{LOGS}/study_report.log",
    benchmark:
        f"{BENCHMARKS}/study_report.tsv"
    conda:
        "../envs/frozenbench.yaml"
    params:
        tables=lambda wildcards, input: os.path.dirname(input.tables[0]),
        probe=lambda wildcards, input: " ".join(f"--probe {shlex.quote(path)}" for path in input.probe),
    shell:
        "frozenbench report --tables {params.tables:q} {params.probe} --out {output:q} > {log:q} 2>&1"
