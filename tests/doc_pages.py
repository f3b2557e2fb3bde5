"""The README and the pages under docs/, read the way the tests need them: their fenced blocks,
the `profiling` commands they show, their links and their headings. No Spark, no subprocess."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"
PAGES = [README, *sorted(DOCS.rglob("*.md"))]

# A fenced block: its opening line (indented as a list item may indent it), its body, and a closing
# fence at the same indent.
FENCE = re.compile(r"^(?P<indent>[ \t]*)```(?P<lang>[\w-]*)[ \t]*\n(?P<body>.*?)^(?P=indent)```[ \t]*$",
                   flags=re.M | re.S)
LINK = re.compile(r"!?\[[^\]\n]*\]\((?P<target>[^)\s]+)\)")
CONTROL = {"&", "&&", "|", "||", ";", ">", ">>", "<", "2>", "2>&1"}
ENV_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


def name(page: Path) -> str:
    return page.relative_to(ROOT).as_posix()


@dataclass(frozen=True)
class Block:
    page: Path
    lang: str
    body: str


def blocks(page: Path) -> list[Block]:
    found = []
    for match in FENCE.finditer(page.read_text()):
        indent = match["indent"]
        body = "".join(line[len(indent):] if line.startswith(indent) else line
                       for line in match["body"].splitlines(keepends=True))
        found.append(Block(page, match["lang"], body))
    return found


def sql_blocks() -> list[Block]:
    """Every ```sql block of the README and docs/, in page order."""
    return [block for page in PAGES for block in blocks(page) if block.lang == "sql"]


def _logical_lines(body: str) -> list[str]:
    """Shell lines with backslash continuations joined."""
    return body.replace("\\\n", " ").splitlines()


@dataclass(frozen=True)
class ShownCommand:
    page: Path
    line: str
    args: tuple[str, ...]  # what follows `profiling`


def shown_commands() -> list[ShownCommand]:
    """Every `profiling ...` or `.venv/bin/profiling ...` line of a ```bash block, and every
    `$ profiling ...` line of an output block, with environment assignments and `time` dropped and
    cut at the first shell operator (`&`, `|`, `>`, ...)."""
    found = []
    for page in PAGES:
        for block in blocks(page):
            for line in _logical_lines(block.body):
                if block.lang in ("bash", "sh", "shell", "console"):
                    text = line.strip().removeprefix("$ ")
                elif block.lang == "" and line.startswith("$ "):
                    text = line[2:]
                else:
                    continue
                words = shlex.split(text, comments=True)
                for i, word in enumerate(words):
                    if word in CONTROL:
                        words = words[:i]
                        break
                while words and (ENV_ASSIGNMENT.match(words[0]) or words[0] == "time"):
                    words = words[1:]
                if words and (words[0] == "profiling" or words[0].endswith("/profiling")):
                    found.append(ShownCommand(page, text, tuple(words[1:])))
    return found


def _prose(text: str) -> str:
    """The text outside fenced blocks and inline code."""
    return re.sub(r"`[^`\n]*`", "", FENCE.sub("", text))


def links(page: Path) -> list[str]:
    return [match["target"] for match in LINK.finditer(_prose(page.read_text()))]


def relative_links(page: Path) -> list[str]:
    return [target for target in links(page) if not re.match(r"^[a-z][a-z0-9+.-]*:", target)]


def anchors(page: Path) -> set[str]:
    """The anchors GitHub gives the page's headings: lower case, punctuation dropped, spaces to
    hyphens, a repeated one suffixed -1, -2, ..."""
    seen: dict[str, int] = {}
    for heading in re.findall(r"^#{1,6}[ \t]+(.+?)[ \t]*#*[ \t]*$", FENCE.sub("", page.read_text()), flags=re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        if count:
            seen[f"{slug}-{count}"] = 1
    return set(seen)
