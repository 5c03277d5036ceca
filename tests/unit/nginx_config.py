"""nginx.conf read as nginx reads it: directives (``name args;``) and blocks
(``name args { ... }``), with ``#`` comments and quoted strings, so that tests
assert what the configuration means rather than how it is spelled.

Small on purpose (no ``include``, no variables): enough for the repo's own
nginx.conf, and strict where nginx is (an unbalanced brace or a directive
without its ``;`` is a ValueError, as ``nginx -t`` would refuse it)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

_ESCAPES = {"n": "\n", "t": "\t", "r": "\r"}


@dataclass(frozen=True, slots=True)
class Token:
    text: str
    line: int
    quoted: bool = False  # "{" or ";" inside quotes is a word, not syntax


def tokens(text: str) -> Iterator[Token]:
    """Words, quoted strings and the three syntax characters ``{ } ;``."""
    i, line, n = 0, 1, len(text)
    while i < n:
        char = text[i]
        if char == "\n":
            line += 1
            i += 1
        elif char.isspace():
            i += 1
        elif char == "#":  # a comment only where a token would start, as in nginx
            while i < n and text[i] != "\n":
                i += 1
        elif char in "{};":
            yield Token(char, line)
            i += 1
        elif char in "\"'":
            start_line, value, i = line, [], i + 1
            while True:
                if i >= n:
                    raise ValueError(f"line {start_line}: unterminated {char} string")
                if text[i] == "\\" and i + 1 < n:  # nginx unescapes these; any other stays as written
                    escaped = text[i + 1]
                    value.append(_ESCAPES.get(escaped, escaped) if escaped in "\"'\\nrt" else text[i:i + 2])
                    i += 2
                    continue
                if text[i] == char:
                    i += 1
                    break
                line += text[i] == "\n"
                value.append(text[i])
                i += 1
            if i < n and not (text[i].isspace() or text[i] in "{};"):
                raise ValueError(f"line {line}: unexpected {text[i]!r} after a quoted string")
            yield Token("".join(value), start_line, quoted=True)
        else:
            start = i
            while i < n and not text[i].isspace() and text[i] not in ";}":
                if text[i] == "{":
                    if text[i - 1] != "$":
                        break  # a block opens
                    close = text.find("}", i)  # "${name}": a variable, part of the word
                    if close < 0:
                        raise ValueError(f"line {line}: unterminated variable")
                    i = close + 1
                elif text[i] == "\\" and i + 1 < n:
                    i += 2
                else:
                    i += 1
            yield Token(text[start:i], line)


@dataclass(frozen=True, slots=True)
class Directive:
    """One directive: its name, its arguments and, for a block, what it holds."""

    name: str
    args: tuple[str, ...]
    line: int
    block: tuple[Directive, ...] | None = None

    def all(self, name: str) -> list[Directive]:
        """The directives ``name`` directly in this block (not nested deeper)."""
        return [child for child in self.block or () if child.name == name]

    def one(self, name: str, *args: str) -> Directive:
        """The single directive ``name`` in this block (whose first arguments are ``args``)."""
        found = [child for child in self.all(name) if child.args[:len(args)] == args]
        if len(found) != 1:
            raise LookupError(f"line {self.line}: {len(found)} {name} {' '.join(args)} directives, not 1")
        return found[0]

    def value(self, name: str) -> tuple[str, ...] | None:
        """The arguments of ``name`` in this block, None where it is not set."""
        found = self.all(name)
        if len(found) > 1:
            raise LookupError(f"line {self.line}: {name} set {len(found)} times")
        return found[0].args if found else None

    def walk(self) -> Iterator[tuple[tuple[Directive, ...], Directive]]:
        """Every directive below this one, depth first, with the blocks it is in (outermost first)."""
        for child in self.block or ():
            yield (self,), child
            for path, inner in child.walk():
                yield (self, *path), inner


def parse(text: str) -> Directive:
    """The whole file, as the block of a nameless root directive."""
    return Directive("", (), 0, tuple(_block(iter(tokens(text)), None)))


def _block(stream: Iterator[Token], opened: Token | None) -> list[Directive]:
    found: list[Directive] = []
    words: list[Token] = []
    for token in stream:
        syntax = not token.quoted and token.text in ("{", "}", ";")
        if syntax and token.text == ";":
            if not words:
                raise ValueError(f"line {token.line}: unexpected ';'")
            found.append(Directive(words[0].text, tuple(w.text for w in words[1:]), words[0].line))
            words = []
        elif syntax and token.text == "{":
            if not words:
                raise ValueError(f"line {token.line}: a block without a name")
            inner = _block(stream, token)
            found.append(Directive(words[0].text, tuple(w.text for w in words[1:]), words[0].line, tuple(inner)))
            words = []
        elif syntax and token.text == "}":
            if opened is None:
                raise ValueError(f"line {token.line}: unexpected '}}'")
            if words:
                raise ValueError(f"line {words[0].line}: {words[0].text} lacks its ';'")
            return found
        else:
            words.append(token)
    if words:
        raise ValueError(f"line {words[0].line}: {words[0].text} lacks its ';'")
    if opened is not None:
        raise ValueError(f"line {opened.line}: block never closed")
    return found


def load(path: Path) -> Directive:
    return parse(path.read_text())


def effective(blocks: tuple[Directive, ...] | list[Directive], name: str) -> list[tuple[str, ...]]:
    """What ``name`` is in the innermost of ``blocks`` (outermost first), as
    nginx inherits it: a level that sets the directive at all replaces every
    value an outer level set (so one ``proxy_set_header`` in a location drops
    all of the server's). Each occurrence's arguments; [] where no level sets it."""
    for block in reversed(list(blocks)):
        found = block.all(name)
        if found:
            return [directive.args for directive in found]
    return []


_TIME_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "M": 2592000, "y": 31536000}


def seconds(value: str) -> float:
    """An nginx time ("1500ms", "4s", "1h30m", "30" = seconds)."""
    if value.isdigit():
        return float(value)
    parts = re.findall(r"(\d+)(ms|[smhdwMy])", value)
    if not parts or "".join(number + unit for number, unit in parts) != value:
        raise ValueError(f"not an nginx time: {value!r}")
    return sum(int(number) * _TIME_UNITS[unit] for number, unit in parts)


def size(value: str) -> int:
    """An nginx size in bytes ("16k", "1m", "512")."""
    match = re.fullmatch(r"(\d+)([kKmMgG]?)", value)
    if not match:
        raise ValueError(f"not an nginx size: {value!r}")
    return int(match[1]) * {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[match[2].lower()]
