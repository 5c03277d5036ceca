"""The repository stands on its own: the contract it implements is described
inside it (docs/contract.md), and nothing points at files a clone does not have."""

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
