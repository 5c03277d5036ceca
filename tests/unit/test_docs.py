"""The repository stands on its own: the contract it implements is described
inside it (docs/contract.md), nothing points at files a clone does not have, and
every benchmark heading something points at exists (BENCHMARKS.md, the current
state on one page, and docs/benchmarks-history.md, the notebook)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
OUTSIDE = re.compile(r"\.\./shared|CONTRACT\.md|CONTRACT §")


def test_no_tracked_file_points_outside_the_repository() -> None:
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    pointing = [name for name in tracked
                if not name.endswith((".png", ".pyc")) and name != "tests/unit/test_docs.py"
                and OUTSIDE.search((REPO / name).read_text(errors="replace"))]
    assert pointing == []


def test_every_section_the_code_cites_exists_in_the_contract() -> None:
    sections = set(re.findall(r"^## (§\d+)", (REPO / "docs" / "contract.md").read_text(), re.M))
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    cited = {section for name in tracked if name.endswith((".py", ".md", ".js"))
             for section in re.findall(r"docs/contract\.md(?:'s)? (§\d+)", (REPO / name).read_text(errors="replace"))}
    assert cited and cited <= sections, cited - sections


# BENCHMARKS.md is the current state on one page; docs/benchmarks-history.md is
# the lab notebook it was built from. Code and prose point into them by link
# (BENCHMARKS.md#anchor, docs/benchmarks-history.md#anchor) or by the heading's
# words: (BENCHMARKS.md, "Heading"), (BENCHMARKS.md, "Decisions in force":
# <decision>), (docs/benchmarks-history.md, session N).
BENCHMARKS = REPO / "BENCHMARKS.md"
HISTORY = REPO / "docs" / "benchmarks-history.md"
PAGES = {"BENCHMARKS.md": BENCHMARKS, "benchmarks-history.md": HISTORY}
ANCHOR_LINK = re.compile(r"(BENCHMARKS\.md|benchmarks-history\.md)#([\w-]+)")
OWN_ANCHOR_LINK = re.compile(r"\]\(#([\w-]+)\)")
CITATION = re.compile(r'(BENCHMARKS\.md|docs/benchmarks-history\.md),? '
                      r'(?:"([^"]+)"(?:: ([^)\];"]+))?|sessions? (\d+))')
BINARY = (".png", ".pyc", ".jpg", ".ico", ".gz")

# Citations of headings that no longer exist: none may be added.
PENDING_CITATIONS: frozenset[str] = frozenset()


def github_anchors(markdown: str) -> list[str]:
    """The anchors GitHub gives a page's headings, in order: the heading's text
    lowercased, every character but letters, digits, `_`, `-` and spaces
    dropped, spaces turned into hyphens; a repeated anchor gets -1, -2, ..."""
    anchors: list[str] = []
    seen: dict[str, int] = {}
    fenced = False
    for line in markdown.splitlines():
        if line.lstrip().startswith(("```", "~~~")):
            fenced = not fenced
            continue
        heading = None if fenced else re.match(r" {0,3}#{1,6}\s+(.*?)(?:\s+#+)?\s*$", line)
        if heading:
            text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading[1])
            base = re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")
            count = seen.get(base, 0)
            anchors.append(base if count == 0 else f"{base}-{count}")
            seen[base] = count + 1
    return anchors


def headings(markdown: str) -> list[str]:
    return [h.strip() for h in re.findall(r"^ {0,3}#{1,6}\s+(.*?)\s*$", markdown, re.M)]


def section(markdown: str, heading: str) -> str:
    """From ``heading`` (a whole line) to the next heading of the same level."""
    start = markdown.index(f"\n{heading}\n") + 1
    level = heading.split()[0]
    end = re.search(rf"^{level} ", markdown[start + len(heading):], re.M)
    return markdown[start:start + len(heading) + end.start()] if end else markdown[start:]


def decisions(markdown: str) -> set[str]:
    """The bold names that open the rows of "Decisions in force" (kept and not kept)."""
    return set(re.findall(r"^\| \*\*(.+?)\*\*", section(markdown, "## Decisions in force"), re.M))


def broken_links(name: str, text: str) -> list[str]:
    found = [f"{name}: {page}#{anchor}" for page, anchor in ANCHOR_LINK.findall(text)
             if anchor not in github_anchors(PAGES[page].read_text())]
    if REPO / name in PAGES.values():  # a page's links to its own headings
        found += [f"{name}: #{anchor}" for anchor in OWN_ANCHOR_LINK.findall(text)
                  if anchor not in github_anchors(text)]
    return found


def cites(heading: str, cited: str) -> bool:
    """``cited`` names ``heading``: all of it, or its first words."""
    return heading == cited or (heading.startswith(cited) and not heading[len(cited)].isalnum())


def stale_citations(name: str, text: str) -> list[str]:
    """Citations by words that name no heading of the page they cite. Sessions
    are the notebook's: ``BENCHMARKS.md, session N`` is stale by definition."""
    flat = re.sub(r"\s*\n\s*(?:#+ ?|// ?)?", " ", text)  # wrapped comments and docstrings
    found = []
    for match in CITATION.finditer(flat):
        page, cited, decision, session = match.groups()
        markdown = PAGES[page.removeprefix("docs/")].read_text()
        if session:
            ok = page.startswith("docs/") and any(re.match(rf"Session {session}\b", h) for h in headings(markdown))
            found += [] if ok else [f"{name}: {page}, session {session}"]
        elif cited == "Decisions in force" and decision:  # the decision's bold name in that section
            ok = page == "BENCHMARKS.md" and decision.strip() in decisions(markdown)
            found += [] if ok else [f'{name}: {page}, "{cited}": {decision.strip()}']
        elif not any(cites(h, cited) for h in headings(markdown)):
            found.append(f'{name}: {page}, "{cited}"')
    return found


def citing_files() -> list[tuple[str, str]]:
    """Every tracked or new file's text but this test's own (its patterns would match)."""
    names = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                           capture_output=True, text=True, check=True).stdout.split()
    return [(name, (REPO / name).read_text(errors="replace")) for name in sorted(set(names))
            if (REPO / name).is_file() and not name.endswith(BINARY) and name != "tests/unit/test_docs.py"]


def test_github_anchors_follow_githubs_rules() -> None:
    page = ("# Final state\n## Series L, the final state (93f3b60), 17:58–18:06 UTC\n```\n# not a heading\n```\n"
            "### A floor beside every run (`--with-floor`, what `make bench` now does)\n## Final state\n"
            "## What is left between the stack and 2 × floor\n# Final state\n## Under `SCHED_FIFO`\n")
    assert github_anchors(page) == [
        "final-state", "series-l-the-final-state-93f3b60-17581806-utc",
        "a-floor-beside-every-run---with-floor-what-make-bench-now-does", "final-state-1",
        "what-is-left-between-the-stack-and-2--floor", "final-state-2", "under-sched_fifo"]


def test_every_link_to_a_benchmarks_heading_resolves() -> None:
    assert broken_links("x.py", "see BENCHMARKS.md#no-such-heading") == ["x.py: BENCHMARKS.md#no-such-heading"]
    assert broken_links("x.md", "[a](docs/benchmarks-history.md#what-the-cpu-was-spent-on)") == []
    files = citing_files()
    assert any(ANCHOR_LINK.search(text) for name, text in files if name == "README.md")
    assert [link for name, text in files for link in broken_links(name, text)] == []


def test_every_benchmarks_heading_cited_by_name_exists() -> None:
    assert stale_citations("x.py", '(BENCHMARKS.md, "No such heading")') == ['x.py: BENCHMARKS.md, "No such heading"']
    assert stale_citations("x.py", "(BENCHMARKS.md, session 4)") == ["x.py: BENCHMARKS.md, session 4"]
    assert stale_citations("x.py", '(BENCHMARKS.md, "Decisions in force": no such decision)') == [
        'x.py: BENCHMARKS.md, "Decisions in force": no such decision']
    assert stale_citations("x.py", '(BENCHMARKS.md, "Decisions in force": payments lane)') == []
    assert stale_citations("x.py", '"""(BENCHMARKS.md,\n    "Decisions in force": payments lane)."""') == []
    assert stale_citations("x.sh", "# (docs/benchmarks-history.md,\n# session 11, series N)") == []
    stale = {citation for name, text in citing_files() if name != "docs/benchmarks-history.md"
             for citation in stale_citations(name, text)}
    assert stale <= PENDING_CITATIONS, sorted(stale - PENDING_CITATIONS)


def test_benchmarks_md_is_the_current_state_on_one_page() -> None:
    text = BENCHMARKS.read_text()
    assert len(text.splitlines()) <= 250
    assert re.findall(r"^## (.+)$", text, re.M)[:3] == [
        "Current state", "Decisions in force", "How to read and run these figures"]  # opens with the tables
    assert not re.search(r"^# Session \d+", text, re.M)  # the notebook is docs/benchmarks-history.md
    blocks = re.split(r"^### ", section(text, "## Current state"), flags=re.M)[1:]
    tables = {block.splitlines()[0]: block for block in blocks}
    for expected in ("Official scenario", "Drain", "Chaos", "HTTP client", "The lane against aiohttp",
                     "Metrics cost", "Compose"):
        title = next((title for title in tables if title.startswith(expected)), None)
        assert title, f"no table for {expected!r}"
        block = tables[title]
        assert re.search(r"^\|", block, re.M), title  # a table,
        assert re.search(r"`(?:\.venv/bin/)?python -m |`make |`loadtest/", block), title  # its command,
        assert re.search(r"\b20\d\d-\d\d-\d\d\b", block), title  # date,
        assert re.search(r"\b(?=[0-9a-f]*\d)[0-9a-f]{7}\b", block), title  # commit
        assert re.search(r"Xeon|EPYC", block), title  # and machine


def test_every_decision_says_why_and_links_to_the_experiment() -> None:
    text = BENCHMARKS.read_text()
    rows = re.findall(r"^\| \*\*.+$", section(text, "## Decisions in force"), re.M)
    assert rows and all("](docs/benchmarks-history.md#" in row for row in rows)
    assert {"payments lane", "own HTTP client", "bare-protocol HTTP client", "ship linger 300 ms",
            "/metrics rendered by the cache", "spool", "patient routing", "pacing", "nginx stream proxy",
            "SCHED_FIFO", "SCHED_IDLE", "one api answering most"} <= decisions(text)


def test_the_notebook_keeps_every_session_newest_first() -> None:
    text = HISTORY.read_text()
    sessions = [int(n) for n in re.findall(r"^# Session (\d+) ", text, re.M)]
    assert sessions == list(range(max(sessions), 0, -1)) and max(sessions) >= 13  # none lost, newest first
    assert "](../BENCHMARKS.md)" in text.split("\n# Session")[0]
