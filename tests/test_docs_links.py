"""Every relative link in the README and docs/ points to a file that exists, and every anchor to a heading.

The README is the user guide and sends the reader to docs/ for the details; a section moved or
renamed there must not leave a dead link behind. Pure Python (no torch), well under a second.
"""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

FENCE = re.compile(r"^\s*(```|~~~)")
HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
# [text](target) or [text](target "title"); images too. Inline code is removed before matching.
LINK = re.compile(r"\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
INLINE_CODE = re.compile(r"`[^`]*`")
EXTERNAL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")  # http:, https:, mailto:, ...


def prose_lines(text: str):
    """(line number, line) outside fenced code blocks, where a `#` is a comment, not a heading."""
    in_fence = False
    for number, line in enumerate(text.splitlines(), start=1):
        if FENCE.match(line):
            in_fence = not in_fence
            continue
        if not in_fence:
            yield number, line


def github_slug(heading: str) -> str:
    """GitHub's anchor for a heading: markup dropped, lowercase, punctuation but '-' and '_' dropped,
    each space a '-'."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading keeps its text
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading's anchor; a repeated heading gets -1, -2, ... as on GitHub."""
    seen: dict[str, int] = {}
    result = set()
    for _, line in prose_lines(path.read_text(encoding="utf-8")):
        match = HEADING.match(line)
        if not match:
            continue
        slug = github_slug(match.group(2))
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        result.add(slug if count == 0 else f"{slug}-{count}")
    return result


def broken_links(document: Path) -> list[str]:
    """Each relative link of `document` whose file or heading does not exist, as 'file:line: target: why'."""
    problems = []
    for number, line in prose_lines(document.read_text(encoding="utf-8")):
        for target in LINK.findall(INLINE_CODE.sub("", line)):
            if EXTERNAL.match(target):
                continue
            path_part, _, anchor = target.partition("#")
            linked = (document.parent / path_part).resolve() if path_part else document
            shown = document.relative_to(ROOT) if document.is_relative_to(ROOT) else document
            where = f"{shown}:{number}: {target}"
            if not linked.exists():
                problems.append(f"{where}: no file {linked}")
            elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
                problems.append(f"{where}: no heading with anchor #{anchor} in {linked.name}")
    return problems


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_points_to_an_existing_file_and_heading(document):
    assert broken_links(document) == []


def test_the_readme_links_to_docs():
    # the guarantee above is empty if the link pattern stopped matching the README's links
    targets = [t for _, line in prose_lines((ROOT / "README.md").read_text()) for t in LINK.findall(line)]
    assert "docs/config.md" in targets
    assert any(t.startswith("docs/reliability.md") for t in targets)


def test_github_slug_rules():
    assert github_slug("The benchmarks (`make bench`)") == "the-benchmarks-make-bench"
    assert github_slug("4. Dry run, 5. submit") == "4-dry-run-5-submit"
    assert github_slug("GPU memory per model size (frozen backbone)") == "gpu-memory-per-model-size-frozen-backbone"
    assert github_slug("snake_case and dash-ed") == "snake_case-and-dash-ed"
    assert github_slug("Reliability: what is guaranteed") == "reliability-what-is-guaranteed"


def test_a_missing_file_a_missing_heading_and_a_code_block_are_told_apart(tmp_path):
    (tmp_path / "target.md").write_text("# Title\n\n## Same\n\n## Same\n\n```bash\n# not a heading\n```\n")
    source = tmp_path / "source.md"
    source.write_text(
        "[ok](target.md) [ok](target.md#title) [dup](target.md#same-1) [self](#local)\n"
        "## Local\n"
        "[gone](missing.md) [bad anchor](target.md#not-a-heading) [code](target.md#not-a-heading-1)\n"
        "[external](https://example.org/x.md#y) `[inline](missing-too.md)`\n"
        "```\n[in a fence](missing-three.md)\n```\n"
    )
    problems = broken_links(source)
    assert len(problems) == 3, problems
    assert "missing.md: no file" in problems[0]
    assert "no heading with anchor #not-a-heading in target.md" in problems[1]
    assert "#not-a-heading-1" in problems[2]  # a '#' comment inside a code fence is no heading
