import json
import shlex

from snakemake.utils import validate


validate(config, schema="../schemas/config.schema.yaml", set_default=True)

PATHS = config["paths"]
DATA = PATHS["data"]
LOGS = PATHS["logs"]


wildcard_constraints:
    dataset="|".join(sorted(config["datasets"])),


def json_arg(value):
    """A config fragment as one shell-quoted JSON argument (params changes trigger reruns)."""
    return shlex.quote(json.dumps(value, sort_keys=True))


def dataset_dir(name):
    return f"{DATA}/{name}"


def all_dataset_outputs():
    return [dataset_dir(name) for name in sorted(config["datasets"])]
