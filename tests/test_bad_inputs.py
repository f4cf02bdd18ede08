"""The bad-input corpus: every module of ``tests/bad_inputs/`` adds the cases of one kind.

Each case runs the command a user would run and checks: a non-zero exit, one clear message naming
the file, URL or key and the problem, no traceback, no output or half-written temporary left
behind, nothing new on disk but what the case allows (``Case.leaves``), no digest recorded as
trusted, and no credential echoed.
"""

from __future__ import annotations

import importlib
import pkgutil

import pytest

from . import bad_inputs
from .bad_inputs.case import Builder, Snapshot
from .conftest import run_cmd

RESULTS: list[tuple[str, bool]] = []  # "kind/name", passed: reported by conftest's terminal summary


def collect() -> dict[str, Builder]:
    cases: dict[str, Builder] = {}
    for info in sorted(pkgutil.iter_modules(bad_inputs.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{bad_inputs.__name__}.{info.name}")
        if not hasattr(module, "CASES"):
            continue
        for name, builder in module.CASES.items():
            key = f"{module.KIND}/{name}"
            if key in cases:
                raise ValueError(f"tests/bad_inputs/{info.name}.py: case {key} is defined twice")
            cases[key] = builder
    return cases


CASES = collect()


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_gets_a_clear_error_and_leaves_nothing(name, tmp_path):
    passed = False
    try:
        case = CASES[name](tmp_path)
        before = Snapshot.take(tmp_path, case.records)
        proc = run_cmd(case.args, cwd=case.cwd, env=case.env, timeout=case.timeout)
        text = proc.stdout + proc.stderr
        assert proc.returncode != 0, text
        assert "Traceback" not in text, text
        named = str(case.named)
        error = text[text.find("error:") :] if "error:" in text else text
        lines = [line for line in text.splitlines() if case.expected in line]
        # Either one line names file and problem (validators), or one error message does
        # (the config validator lists the keys under the line that names the file).
        assert lines and (any(named in line for line in lines) or (named in error and case.expected in error)), text
        assert "this checkpoint ran code while loading" not in text
        for secret in case.secrets:
            assert secret not in text, f"the credential {secret!r} was printed:\n{text}"
        if case.output is not None:  # neither the artifact nor a temporary sibling of it
            assert not case.output.exists(), f"{case.output} was written"
            siblings = list(case.output.parent.glob(f".{case.output.name}*")) if case.output.parent.exists() else []
            assert siblings == [], f"half-written output left behind: {siblings}"
        after = Snapshot.take(tmp_path, case.records)
        assert after.record_digest == before.record_digest, f"{case.records} changed: a refused input was trusted"
        assert before.new_files(after, case.leaves) == [], "the refused run left files behind"
        passed = True
    finally:
        RESULTS.append((name, passed))
