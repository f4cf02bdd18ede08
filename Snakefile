# frozenbench: frozen pretrained backbones, trainable task heads.
# This file only validates the config, includes the stages and declares targets;
# every rule's logic lives in src/frozenbench (one CLI subcommand per rule).
from snakemake.utils import min_version

min_version("9.0")


# config.yaml is the default study; a --configfile replaces it instead of being
# merged into it (a merge would mix the mini datasets into the paper study).
if not config:

    configfile: "config.yaml"


report: "report/workflow.rst"


include: "rules/common.smk"


# Memory before the queue: a cell whose estimated peak GPU memory exceeds its card is refused here,
# before any job runs, naming the settings to change (frozenbench.cluster.memory, docs/memory.md).
# Configs that train on the CPU (the mini-study, CI) are never counted. Only the main process
# checks: every job re-reads this file inside its Slurm allocation, where the check is done already.
if workflow.is_main_process:
    try:
        from frozenbench.cluster.memory import check_memory

        for _note in check_memory(config):
            print(f"memory check: {_note}", file=sys.stderr)
    except ConfigError as err:
        raise WorkflowError(str(err)) from None


include: "rules/data.smk"
include: "rules/checkpoints.smk"
include: "rules/train.smk"
include: "rules/report.smk"


# The profiles keep going past a failed job; at the end, a run with failures names every failed
# study cell with its logs (read from Snakemake's own log, so a job Slurm killed is named too) and
# writes partial tables marking cells `failed` or `not run` (frozenbench.study_status). all_tables
# still needs every cell; a later run rebuilds the tables whole.
onerror:
    from snakemake.logging import logger
    from frozenbench.study_status import after_failed_run

    logger.error(after_failed_run(log, config))


onsuccess:
    from snakemake.logging import logger
    from frozenbench.study_status import after_successful_run

    refreshed = after_successful_run(config)
    if refreshed:
        logger.info(refreshed)


if DOWNLOADS_ON_LOGIN_NODE:

    localrules:
        download_dataset,
        fetch_checkpoint,


rule all_tables:
    default_target: True
    input:
        all_dataset_outputs(),
        all_checkpoint_outputs(),
        all_table_outputs(),
        all_submission_outputs(),
        study_report_output(),


rule data_all:
    input:
        all_dataset_outputs(),


rule checkpoints_all:
    input:
        all_checkpoint_outputs(),


rule train_all:
    input:
        all_cell_outputs(),


rule submissions_all:
    input:
        all_submission_outputs(),


rule report:
    input:
        study_report_output(),
