"""A Griffe extension for the API page (mkdocs.yml loads it): fmi's docstrings, read as Markdown.

fmi's docstrings are plain text with doctests and Sphinx roles, not Markdown. Rendered as they
are, a doctest's output such as ``[0.9124, 1.0]`` after ``[round(x, 4) for x in ...]`` reads as a
Markdown reference link (mkdocs-autorefs then warns), and ``>>>`` lines become nested quotes.
Before any docstring is parsed this extension rewrites, in the loaded copy only (no source file
changes):

- every run of ``>>>`` lines with its output, up to the next blank line, into a ``pycon``
  code block;
- every ``:func:`name``` (``:class:``, ``:meth:``, ``:mod:``, ``:data:``, ...) into an optional
  cross-reference: a link when the name, looked up from the docstring's own scope outwards, is
  an object on the API page, plain code otherwise (no warning either way).
"""

from __future__ import annotations

import re
from typing import Any

from griffe import Extension, GriffeLoader, Module, Object

ROLE = re.compile(r":(?:func|meth|class|mod|data|attr|exc|obj|const):`~?([\w.]+)(?:\(\))?`")
FENCE = re.compile(r"^\s*(```|~~~)")


def doctests_as_code(text: str) -> str:
    """``>>>`` runs (with their output, up to a blank line) as fenced ``pycon`` blocks.

    >>> doctests_as_code("Text.\\n>>> 1 + 1\\n2\\n\\nMore.").split("\\n")
    ['Text.', '', '```pycon', '>>> 1 + 1', '2', '```', '', 'More.']
    """
    out: list[str] = []
    lines = text.split("\n")
    i = 0
    in_fence = False
    while i < len(lines):
        line = lines[i]
        if FENCE.match(line):
            in_fence = not in_fence
        indent = len(line) - len(line.lstrip(" "))
        if in_fence or indent >= 4 or not line.lstrip().startswith(">>>"):
            out.append(line)
            i += 1
            continue
        pad = " " * indent
        block = []
        while i < len(lines) and lines[i].strip():
            block.append(lines[i])
            i += 1
        if out and out[-1].strip():
            out.append("")
        out += [f"{pad}```pycon", *block, f"{pad}```"]
        if i < len(lines) and lines[i].strip():
            out.append("")
    return "\n".join(out)


def _outside_code(text: str, fn) -> str:
    """``fn`` applied to the text outside fenced blocks."""
    parts = re.split(r"(```.*?```)", text, flags=re.S)
    return "".join(p if p.startswith("```") else fn(p) for p in parts)


class DocstringMarkdown(Extension):
    """Doctests as code blocks and Sphinx roles as optional cross-references, for mkdocstrings."""

    def on_package(self, *, pkg: Module, loader: GriffeLoader, **kwargs: Any) -> None:
        for obj in _walk(pkg):
            if obj.docstring is None:
                continue
            text = doctests_as_code(obj.docstring.value)
            obj.docstring.value = _outside_code(
                text, lambda part, o=obj: ROLE.sub(lambda m: _reference(o, m[1], loader), part)
            )


def _walk(obj: Object):
    yield obj
    for member in obj.members.values():
        if not member.is_alias and member.parent is obj:
            yield from _walk(member)


def _reference(obj: Object, name: str, loader: GriffeLoader) -> str:
    """The optional autoref for ``name`` as seen from ``obj``'s scope, or plain code."""
    scopes = []
    scope: Object | None = obj
    while scope is not None:
        scopes.append(f"{scope.path}.{name}")
        scope = scope.parent
    for path in [*scopes, name]:
        try:
            # an imported name is an alias: link to where it is defined
            identifier = loader.modules_collection[path].canonical_path
        except Exception:  # not found, or an alias that leaves the package (torch, ...)
            continue
        return f'<autoref identifier="{identifier}" optional><code>{name}</code></autoref>'
    return f"`{name}`"
