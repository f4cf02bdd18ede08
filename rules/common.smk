import json
import re
import shlex

from snakemake.utils import validate


validate(config, schema="../schemas/config.schema.yaml", set_default=True)

PATHS = config["paths"]
DATA = PATHS["data"]
DOWNLOADS = PATHS["downloads"]
LOGS = PATHS["logs"]

SYNTH_DATASETS = sorted(k for k, v in config["datasets"].items() if v["source"] == "synth")
DOWNLOAD_DATASETS = sorted(k for k, v in config["datasets"].items() if v["source"] == "download")


def names_alternation(names):
    """A wildcard regex matching exactly these names (never an empty alternation)."""
    return "|".join(re.escape(n) for n in names) or "(?!)"


def json_arg(value):
    """A config fragment as one shell-quoted JSON argument (params changes trigger reruns)."""
    return shlex.quote(json.dumps(value, sort_keys=True))


def dataset_dir(name):
    return f"{DATA}/{name}"


def all_dataset_outputs():
    return [dataset_dir(name) for name in sorted(config["datasets"])]
