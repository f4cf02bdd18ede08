"""The bad-input corpus: every module of ``tests/bad_inputs/`` adds the cases of one kind.

Each case runs the command a user would run and checks: a non-zero exit, one clear message naming
the file, URL or key and the problem, no traceback, no output or half-written temporary left
behind, nothing new on disk but what the case allows (``Case.leaves``), no digest recorded as
trusted, and no credential echoed.

The commands of the selected cases run a few at a time on threads (each case in its own folder,
the downloads against one threaded server): most of a case is a process starting and waiting on
a server, so the corpus takes about half as long as one after the other. Each case is still its
own test, which asserts on its command's outcome.
"""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pytest

from . import bad_inputs
from .bad_inputs.case import Builder, Case, Snapshot
from .conftest import run_cmd

RESULTS: list[tuple[str, bool]] = []  # "kind/name", passed: reported by conftest's terminal summary
CONCURRENT_CASES = 3


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


@dataclass
class Outcome:
    case: Case
    proc: subprocess.CompletedProcess
    before: Snapshot
    after: Snapshot


def run_case(name: str, tmp_path_factory: pytest.TempPathFactory) -> Outcome | BaseException:
    try:
        tmp = tmp_path_factory.mktemp(name.replace("/", "-"))
        case = CASES[name](tmp)
        before = Snapshot.take(tmp, case.records)
        proc = run_cmd(case.args, cwd=case.cwd, env=case.env, timeout=case.timeout)
        return Outcome(case, proc, before, Snapshot.take(tmp, case.records))
    except Exception as err:  # reported by the case's own test
        return err


@pytest.fixture(scope="module")
def outcomes(request, tmp_path_factory) -> dict[str, Outcome | BaseException]:
    """The outcome of every selected case's command, run CONCURRENT_CASES at a time."""
    selected = [
        item.callspec.params["name"]
        for item in request.session.items
        if item.module is request.module and hasattr(item, "callspec")
    ]
    with ThreadPoolExecutor(max_workers=CONCURRENT_CASES) as pool:
        results = pool.map(lambda name: run_case(name, tmp_path_factory), selected)
        return dict(zip(selected, results))


@pytest.mark.slow  # the corpus runs once for all cases, ~2 min on 2 cores
@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_gets_a_clear_error_and_leaves_nothing(name, outcomes):
    passed = False
    try:
        outcome = outcomes[name]
        if isinstance(outcome, BaseException):
            raise outcome
        case, proc = outcome.case, outcome.proc
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
        before, after = outcome.before, outcome.after
        assert after.record_digest == before.record_digest, f"{case.records} changed: a refused input was trusted"
        assert before.new_files(after, case.leaves) == [], "the refused run left files behind"
        passed = True
    finally:
        RESULTS.append((name, passed))
