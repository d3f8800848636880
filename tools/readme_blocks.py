"""The fenced code blocks of README.md, for the test that runs them and for CI.

    python tools/readme_blocks.py quick-start     # print the quick start's block

Every block carries a language: ``python`` and ``bash`` blocks are code a reader can paste
(tests/test_readme.py runs each of them verbatim, in order); ``text`` blocks are output,
synopses and layouts. Standard library only: ``.ci/run`` calls it before anything is
installed.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"
FENCE = re.compile(r"^```(?P<language>[^\n`]*)\n(?P<code>.*?)^```[ \t]*$", re.M | re.S)
LANGUAGES = ("python", "bash", "text")


@dataclass(frozen=True)
class Block:
    """One fenced block: its language, its code (ending in a newline), the README line of
    its opening fence and the heading it stands under."""

    language: str
    code: str
    line: int
    heading: str

    @property
    def installs(self) -> bool:
        """Whether the block sets up an environment (pip or conda) instead of using one."""
        return self.language == "bash" and bool(
            re.search(r"^\s*(pip|conda) ", self.code, flags=re.M))


def readme_blocks(text: str | None = None) -> list[Block]:
    """Every fenced block of ``text`` (default: README.md), in order."""
    text = README.read_text(encoding="utf-8") if text is None else text
    blocks = []
    for match in FENCE.finditer(text):
        before = text[:match.start()]
        headings = re.findall(r"^#+ (.*)$", before, flags=re.M)
        blocks.append(Block(match["language"].strip(), match["code"],
                            before.count("\n") + 1, headings[-1] if headings else ""))
    return blocks


def quick_start() -> Block:
    """The block under the "Quick start" heading."""
    (block,) = [b for b in readme_blocks() if b.heading.startswith("Quick start")]
    return block


if __name__ == "__main__":
    if sys.argv[1:] != ["quick-start"]:
        sys.exit("usage: python tools/readme_blocks.py quick-start")
    sys.stdout.write(quick_start().code)
