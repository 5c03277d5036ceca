"""A Dockerfile read as the builder reads it: instructions (continuation lines
joined, comments dropped, the ``escape`` parser directive honoured), what each
COPY puts where in the image, and the simple commands a shell form RUN runs;
so that tests assert what the image does rather than how the file is spelled."""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

_DIRECTIVE = re.compile(r"#\s*(\w+)\s*=\s*(\S+)\s*$")


@dataclass(frozen=True, slots=True)
class Instruction:
    keyword: str  # upper case: FROM, RUN, COPY, ...
    value: str  # the arguments, continuation lines joined
    line: int

    def words(self) -> list[str]:
        """The arguments: the JSON (exec) form's list, or the shell form split as a shell would."""
        exec_form = self.exec_form()
        return exec_form if exec_form is not None else shlex.split(self.value)

    def exec_form(self) -> list[str] | None:
        if self.value.startswith("["):
            try:
                parsed = json.loads(self.value)
            except ValueError:
                return None  # not valid JSON: Docker takes it as the shell form
            if isinstance(parsed, list) and all(isinstance(item, str) for item in parsed):
                return parsed
        return None


def instructions(text: str) -> list[Instruction]:
    lines = text.splitlines()
    escape = "\\"
    start = 0
    while start < len(lines) and (directive := _DIRECTIVE.match(lines[start])):  # parser directives come first
        if directive[1].lower() == "escape":
            escape = directive[2]
        start += 1
    found: list[Instruction] = []
    pending: list[str] = []
    first = 0
    for number, line in enumerate(lines[start:], start + 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue  # comment lines are dropped, even between continuation lines
        if not pending:
            first = number
        if stripped.endswith(escape):
            pending.append(stripped[:-len(escape)])
            continue
        pending.append(stripped)
        keyword, _, value = " ".join(pending).partition(" ")
        found.append(Instruction(keyword.upper(), value.strip(), first))
        pending = []
    if pending:
        raise ValueError(f"line {first}: the file ends inside a continued instruction")
    return found


def shell_commands(script: str) -> list[tuple[list[str], str]]:
    """The simple commands of a shell command line, each as its words (quotes
    removed) with the operator that follows it (``&&``, ``||``, ``;``, ``|``,
    ``&``; "" after the last)."""
    lexer = shlex.shlex(script, posix=True, punctuation_chars=";&|")
    lexer.whitespace_split = True
    commands: list[tuple[list[str], str]] = []
    words: list[str] = []
    for token in lexer:
        if token and set(token) <= set(";&|"):
            if not words:
                raise ValueError(f"{token!r} without a command before it in {script!r}")
            commands.append((words, token))
            words = []
        else:
            words.append(token)
    if words:
        commands.append((words, ""))
    return commands


def flags_and_args(words: list[str]) -> tuple[dict[str, str], list[str]]:
    """``--name=value`` options first (COPY, ADD, RUN), then the rest."""
    flags: dict[str, str] = {}
    while words and words[0].startswith("--"):
        name, _, value = words[0][2:].partition("=")
        flags[name] = value
        words = words[1:]
    return flags, words


def workdir_at(found: list[Instruction], index: int) -> PurePosixPath:
    """The working directory instruction ``index`` runs in (``/`` unless WORKDIR set one)."""
    workdir = PurePosixPath("/")
    for instruction in found[:index]:
        if instruction.keyword == "FROM":
            workdir = PurePosixPath("/")  # a new stage starts from its base image's (taken as /)
        elif instruction.keyword == "WORKDIR":
            workdir = workdir / instruction.words()[0]  # relative to the previous one
    return workdir


def copied_before(found: list[Instruction], index: int, context: Path) -> dict[PurePosixPath, Path]:
    """What each COPY/ADD from the build ``context`` before instruction
    ``index`` (in its stage) put where: image path -> what is there. A file
    lands at the destination (or in it, for a destination ending in ``/`` or
    several sources); a directory's contents are copied into the destination,
    as Docker copies them, so the image path is then that directory."""
    placed: dict[PurePosixPath, Path] = {}
    for position, instruction in enumerate(found[:index]):
        if instruction.keyword == "FROM":
            placed = {}
        if instruction.keyword not in ("COPY", "ADD"):
            continue
        flags, words = flags_and_args(instruction.words())
        if "from" in flags:
            continue  # from another stage or image, not from the build context
        *patterns, destination = words
        sources = [path for pattern in patterns
                   for path in (sorted(context.glob(pattern)) if set(pattern) & set("*?[") else [context / pattern])]
        target = workdir_at(found, position) / destination
        into_directory = destination.endswith("/") or len(sources) > 1
        for source in sources:
            if not source.exists():
                raise ValueError(f"line {instruction.line}: {source} is not in the build context")
            placed[target / source.name if into_directory and source.is_file() else target] = source
    return placed
