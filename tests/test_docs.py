"""The docs: a short README whose first section holds the two fresh-machine commands, relative
links and images that resolve (files and #anchors), and facts stated in one place only."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
README_MAX_LINES = 220

# The two commands of the README's first section, byte for byte: CI (.ci/run) runs the second.
MAIN_COMMAND = (
    "python3 -m venv .venv && .venv/bin/pip install -e . && "
    ".venv/bin/identity-crisis fit --config configs/cnn.yaml"
)
TEST_COMMAND = (
    "python3 -m venv .venv && .venv/bin/pip install -e '.[dev]' && .venv/bin/python -m pytest"
)

# A fact that used to be repeated across the docs, by a phrase that states it (whitespace
# aside), and the one file that holds it; every other page links there.
FACTS = {
    "the data-root rule": ("The data root is `--data.root`, else", "README.md"),
    "uploading offline runs": (
        "wandb sync runs/<group>/<run>/wandb/offline-run-*",
        "docs/wandb.md",
    ),
    "how runs are named": (
        "Run names derive from the hyperparameters plus the seed",
        "docs/wandb.md",
    ),
    "the verdict rule": ("**identity** if identity_corr >= 0.9", "docs/runs.md"),
    "what the GPU check runs": ("It fits the default depth-5 CNN on cuda", "docs/INSTALL.md"),
}
# Prose shared word for word by two doc files over this many words is a fact stated twice.
SHARED_WORDS = 10

FENCE = re.compile(r"^(```|~~~)")
LINK = re.compile(r"!?\[(?:[^\]\[]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
INLINE_CODE = re.compile(r"`[^`]*`")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


def doc_files() -> list[Path]:
    """The checked docs: README.md, REPRODUCTION.md, sweeps/README.md and docs/*.md."""
    files = [REPO / "README.md", REPO / "REPRODUCTION.md", REPO / "sweeps" / "README.md"]
    return files + sorted((REPO / "docs").glob("*.md"))


def prose_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) outside fenced code blocks."""
    lines, fenced = [], False
    for number, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line.lstrip()):
            fenced = not fenced
            continue
        if not fenced:
            lines.append((number, line))
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: the rendered text, lower case, punctuation dropped, spaces
    to hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link renders as its text
    text = text.replace("`", "").strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading's anchor in a markdown file; repeated headings get -1, -2, ... as on GitHub."""
    seen: Counter[str] = Counter()
    found = set()
    for _, line in prose_lines(path.read_text(encoding="utf-8")):
        match = HEADING.match(line)
        if not match:
            continue
        base = slug(match.group(2))
        found.add(base if not seen[base] else f"{base}-{seen[base]}")
        seen[base] += 1
    return found


def broken_links(path: Path) -> list[str]:
    """Each relative link or image in `path` whose file, or whose #anchor in a .md file, is
    missing, as 'line N: target (why)'."""
    problems = []
    for number, line in prose_lines(path.read_text(encoding="utf-8")):
        for target in LINK.findall(INLINE_CODE.sub("", line)):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE):  # http:, mailto:, ...
                continue
            file_part, _, anchor = target.partition("#")
            linked = (path.parent / file_part).resolve() if file_part else path
            if not linked.exists():
                problems.append(f"line {number}: {target} (no such file)")
            elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
                problems.append(f"line {number}: {target} (no heading #{anchor} in {linked.name})")
    return problems


def first_section(text: str) -> str:
    """The README from its first '## ' heading to the next."""
    match = re.search(r"^## .*?(?=^## )", text, re.MULTILINE | re.DOTALL)
    assert match, "the README has no second-level sections"
    return match.group(0)


def test_readme_is_short():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, (
        f"README.md has {len(lines)} lines, at most {README_MAX_LINES}"
    )


def test_readme_first_section_holds_the_two_commands():
    section = first_section(README.read_text(encoding="utf-8"))
    blocks = re.findall(r"^```[a-z]*\n(.*?)^```", section, re.MULTILINE | re.DOTALL)
    assert [block.strip() for block in blocks] == [MAIN_COMMAND, TEST_COMMAND]
    ci = REPO / ".ci" / "run"
    if ci.exists():
        assert TEST_COMMAND in ci.read_text(encoding="utf-8").splitlines()


@pytest.mark.parametrize("path", doc_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_resolve(path):
    assert broken_links(path) == []


def test_the_link_check_finds_broken_links(tmp_path):
    (tmp_path / "other.md").write_text("# Other page\n\n## A `code` heading: yes (really)\n")
    (tmp_path / "page.md").write_text(
        "# Page\n\n"
        "[fine](other.md#a-code-heading-yes-really) [fine too](#page) [web](https://example.org)\n"
        "![missing image](figures/none.png) and [bad anchor](other.md#no-such-heading)\n"
        "`[in code](nowhere.md)`\n\n```\n[in a block](nowhere.md)\n```\n"
    )
    assert broken_links(tmp_path / "page.md") == [
        "line 4: figures/none.png (no such file)",
        "line 4: other.md#no-such-heading (no heading #no-such-heading in other.md)",
    ]


@pytest.mark.parametrize("fact", FACTS)
def test_a_fact_is_stated_once(fact):
    phrase, home = (" ".join(part.split()) for part in FACTS[fact])
    counts = {
        str(path.relative_to(REPO)): " ".join(path.read_text(encoding="utf-8").split()).count(
            phrase
        )
        for path in doc_files()
    }
    assert {name: n for name, n in counts.items() if n} == {home: 1}, fact


def prose_words(text: str) -> list[str]:
    """The words of a doc's prose: no code blocks, no tables, links as their text."""
    lines = [line for _, line in prose_lines(text) if not line.lstrip().startswith("|")]
    prose = re.sub(r"\]\([^)]*\)", "]", " ".join(lines))
    return re.sub(r"[^\w\s]", " ", prose.lower()).split()


def shared_prose(texts: dict[str, str], n: int = SHARED_WORDS) -> list[str]:
    """Runs of n words that two or more of the texts share, as 'file, file: the words'."""
    where: dict[str, set[str]] = {}
    for name, text in texts.items():
        words = prose_words(text)
        for i in range(len(words) - n + 1):
            where.setdefault(" ".join(words[i : i + n]), set()).add(name)
    return [f"{', '.join(sorted(names))}: {run}" for run, names in where.items() if len(names) > 1]


def test_no_prose_is_stated_twice():
    texts = {str(p.relative_to(REPO)): p.read_text(encoding="utf-8") for p in doc_files()}
    assert shared_prose(texts) == []


def test_the_prose_check_finds_a_repeated_sentence():
    sentence = "A rerun skips done cells and runs the rest: failed, interrupted and never started."
    texts = {
        "a.md": f"# A\n\n{sentence}\n",
        "b.md": f"Intro. {sentence.upper()}\n\n| {sentence} |\n",
    }
    shared = shared_prose(texts)  # its 14 words: 5 runs of 10, whatever the case
    assert shared[0] == "a.md, b.md: a rerun skips done cells and runs the rest failed"
    assert len(shared) == 5
    assert shared_prose({"a.md": sentence, "b.md": f"| {sentence} |"}) == []


def test_no_machine_paths_in_the_docs():
    for path in doc_files():
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"(?<![\w.])/(work|home|Users|root)/", text), path
