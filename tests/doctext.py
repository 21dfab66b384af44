"""Reading the Markdown docs as a test sees them: code blocks, the commands in them, links, headings."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

_FENCE = re.compile(r"^ {0,3}(```|~~~)")
_HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$")
_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
#: Shell operators that end a command; a redirection ends its arguments.
_SEPARATORS = {"&&", "||", "|", ";", "&"}
_REDIRECTS = {">", ">>", "<", "<<", "2>", "&>"}


def split(text: str) -> tuple[list[str], list[str]]:
    """The page's code blocks (fenced, or indented by four spaces after a blank line) and
    the rest of its lines (prose, tables and headings)."""
    blocks: list[str] = []
    prose: list[str] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        fence = _FENCE.match(line)
        if fence:
            body = []
            i += 1
            while i < len(lines) and not lines[i].lstrip().startswith(fence.group(1)):
                body.append(lines[i])
                i += 1
            blocks.append("\n".join(body))
            i += 1
            continue
        if line.startswith("    ") and (i == 0 or not lines[i - 1].strip()):
            body = []
            while i < len(lines) and (lines[i].startswith("    ") or not lines[i].strip()):
                body.append(lines[i][4:])
                i += 1
            blocks.append("\n".join(body))
            continue
        prose.append(line)
        i += 1
    return blocks, prose


def cli_commands(path: Path) -> list[tuple[str, list[str]]]:
    """Every ``ecomm-cdc ...`` invocation in the page's code blocks: (the line, its arguments).

    A command is found where ``ecomm-cdc`` (or a path ending in it, ``.venv/bin/ecomm-cdc``)
    is the command word, after any ``VAR=value`` assignments and a ``$`` prompt, in any
    part of a line joined by ``&&``, ``|`` or ``;``; its arguments end at a redirection.
    ``ecomm-cdc`` as an image name (``docker run ... ecomm-cdc``) is not a command word.
    """
    found: list[tuple[str, list[str]]] = []
    blocks, _ = split(path.read_text())
    for block in blocks:
        for line in block.replace("\\\n", " ").splitlines():
            text = line.strip().removeprefix("$ ")
            if "ecomm-cdc" not in text:
                continue
            for words in _commands(text):
                while words and _ASSIGNMENT.match(words[0]):
                    words = words[1:]
                if words and Path(words[0]).name == "ecomm-cdc":
                    found.append((line.strip(), words[1:]))
    return found


def _commands(text: str) -> list[list[str]]:
    lexer = shlex.shlex(text, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    commands: list[list[str]] = [[]]
    cut = False
    for token in lexer:
        if token in _SEPARATORS:
            commands.append([])
            cut = False
        elif token in _REDIRECTS:
            cut = True
        elif not cut:
            commands[-1].append(token)
    return [c for c in commands if c]


def links(path: Path) -> list[str]:
    """The targets of the page's Markdown links and images, outside code blocks."""
    _, prose = split(path.read_text())
    text = re.sub(r"`[^`]*`", "", "\n".join(prose))  # a code span is not a link
    return _LINK.findall(text)


def anchors(path: Path) -> set[str]:
    """The anchors GitHub gives the page's headings: lower case, punctuation dropped,
    spaces as hyphens."""
    _, prose = split(path.read_text())
    found = set()
    for line in prose:
        m = _HEADING.match(line)
        if m:
            title = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", m.group(1)).lower()
            found.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return found
