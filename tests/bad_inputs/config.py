"""Configs a user writes: wrong types, unknown keys, unsafe names, broken cross-references."""

from __future__ import annotations

from pathlib import Path

import yaml

from ..test_config import CONFIG_CASES, broken_config
from ..conftest import REPO
from .case import BAD, Builder, Case

KIND = "config"


def synth_case(name: str, expected: str) -> Builder:
    """``frozenbench synth`` with the committed config ``tests/data/bad/<name>``."""

    def case(tmp: Path) -> Case:
        out = tmp / "data" / "shapes-coco"
        args = ["frozenbench", "synth", "--config", str(BAD / name), "--dataset", "shapes-coco", "--out", str(out)]
        return Case(args, BAD / name, expected, output=out)

    return case


def broken_config_case(name: str) -> Builder:
    """``frozenbench check-config`` (what every subcommand and the DAG run first) on a config with an
    unsafe name or a broken cross-reference (``tests/test_config.py``'s CONFIG_CASES)."""

    def case(tmp: Path) -> Case:
        path = tmp / f"{name}.yaml"
        path.write_text(yaml.safe_dump(broken_config(name)))
        return Case(["frozenbench", "check-config", str(path)], path, CONFIG_CASES[name][2])

    return case


# -- the file itself: what plain yaml.safe_load would read without a word (issue 25) --------------

SHIPPED = REPO / "config.yaml"
ADE_TRAIN = (
    "    train: {steps: 600, batch_size: 4, lr: 0.001, warmup_steps: 30, checkpoint_every: 100, log_every: 10}\n"
)
DOWNLOAD = """
  coco-dl:
    source: download
    format: coco
    download:
      files:
        - url: {url}
          filename: coco.zip
          checksum: {{unpublished: the host publishes no digest}}
"""


def edited(old: str, new: str, named: str | None = None, expected: str = "", secrets: tuple[str, ...] = ()) -> Builder:
    """``frozenbench check-config`` on the shipped config.yaml with ``old`` replaced by ``new``; the
    error names the key ``named`` (default: the file, for problems of the YAML text itself)."""

    def case(tmp: Path) -> Case:
        text = SHIPPED.read_text()
        assert old in text, old
        path = tmp / "study.yaml"
        path.write_bytes(text.replace(old, new, 1).encode("utf-8", "surrogateescape"))
        return Case(["frozenbench", "check-config", str(path)], named or path, expected, cwd=tmp, secrets=secrets)

    return case


def written(content: bytes, expected: str) -> Builder:
    """``frozenbench check-config`` on a file of exactly ``content``; the error names the file."""

    def case(tmp: Path) -> Case:
        path = tmp / "study.yaml"
        path.write_bytes(content)
        return Case(["frozenbench", "check-config", str(path)], path, expected, cwd=tmp)

    return case


def alias_bomb() -> bytes:
    """Billion laughs: nine levels of nine aliases, 9**9 values from a 1 kB file."""
    lines = ['lol0: &lol0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"lol{i}: &lol{i} [{', '.join([f'*lol{i - 1}'] * 9)}]" for i in range(1, 10)]
    return SHIPPED.read_bytes() + ("\n".join(lines) + "\n").encode()


STRICT_CASES: dict[str, Builder] = {
    # a second `train:` pasted in to try fewer steps: safe_load keeps it and the study changes
    "config_duplicate_key": edited(
        ADE_TRAIN,
        ADE_TRAIN + "    train: {steps: 60, batch_size: 4, lr: 0.001}\n",
        expected="duplicate key tasks.ade.train",
    ),
    "config_alias_bomb": written(alias_bomb(), "an alias bomb"),
    "config_off_as_key": edited(
        "\nstudy:\n",
        "\noff: [k400]\n\nstudy:\n",
        expected="key 'off' under the top level is read by YAML as the boolean",
    ),
    "config_yes_as_head_name": edited(
        "      mrcnn_fpn: {width: 64, rpn_samples: 128, rcnn_samples: 128}\n",
        "      mrcnn_fpn: {width: 64, rpn_samples: 128, rcnn_samples: 128}\n      yes: {width: 32}\n",
        expected="key 'yes' under tasks.coco.heads is read by YAML as the boolean True",
    ),
    "config_tab_indented": edited("\n  runs: runs\n", "\n\truns: runs\n", expected="a tab character"),
    "config_two_documents": edited("\nstudy:\n", "\n---\nstudy:\n", expected="a second YAML document"),
    "config_empty": written(b"# the study goes here\n", "the config file is empty"),
    "config_a_list": written(b"- seed: 0\n- paths: {data: data}\n", "the top level is a list"),
    "config_latin1": edited(
        "# frozenbench embedded", "# frozenbench \udce9mbedded", expected="not UTF-8 text (byte 0xe9)"
    ),
    # credentials: refused naming the key, the URL masked, the secret printed nowhere
    "config_url_with_password": edited(
        "\ndatasets:\n",
        "\ndatasets:" + DOWNLOAD.format(url="https://alice:hunter2@data.example.org/coco.zip"),
        "datasets.coco-dl.download.files.0.url",
        "credentials in the URL https://***@data.example.org/coco.zip",
        secrets=("hunter2",),
    ),
    "config_url_with_token": edited(
        "\ndatasets:\n",
        "\ndatasets:" + DOWNLOAD.format(url="https://data.example.org/coco.zip?access_token=ghp_s3cr3tT0k3n"),
        "datasets.coco-dl.download.files.0.url",
        "credentials in the URL https://data.example.org/coco.zip?access_token=***",
        secrets=("ghp_s3cr3tT0k3n",),
    ),
}


CASES: dict[str, Builder] = {
    "config_wrong_type": synth_case("config_wrong_type.yaml", "datasets.shapes-coco.synth.num_train"),
    "config_unknown_key": synth_case("config_unknown_key.yaml", "'colour' was unexpected"),
    **{f"config_{name}": broken_config_case(name) for name in CONFIG_CASES},
    **STRICT_CASES,
}
