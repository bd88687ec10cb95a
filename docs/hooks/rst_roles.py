"""Griffe extension: the package's docstrings are PyG-style reStructuredText; mkdocstrings
renders Markdown. Before a docstring is parsed, this rewrites the reST it uses into Markdown
that the site's extensions render:

- ``:math:`x``` -> ``$x$`` and ``.. math::`` blocks -> ``$$ ... $$`` (pymdownx.arithmatex);
  a block whose equations (separated by blank lines) use ``&`` becomes one ``aligned``
  environment, as Sphinx aligns them;
- ``:class:``, ``:func:``, ``:meth:``, ``:attr:``, ``:mod:``, ``:data:``, ``:exc:`` and
  ``:obj:`` -> code, linked to the object's entry in the API reference where the name
  resolves (an optional autorefs cross-reference: no link and no warning where the target is
  not rendered); ``~`` shows the last component only, ``!`` never links, ``Title <target>``
  shows the title;
- ``:sup:`x``` / ``:sub:`x``` -> ``<sup>x</sup>`` / ``<sub>x</sub>``; any other role -> code;
- simple tables (``====  ====`` borders) -> Markdown tables;
- ```text <url>`_`` -> ``[text](url)``; a backslash-space before a role (reST's separator)
  is dropped.

``rst_to_markdown`` is the converter (tested in tests/docs/test_rst_roles.py); ``RstRoles``
applies it to every docstring griffe loads, resolving names in the object's scope.
"""
from __future__ import annotations

import html
import re
import textwrap
from collections.abc import Callable

_XREF_ROLES = {"class", "func", "meth", "attr", "mod", "data", "exc", "obj", "const", "any"}
_ROLE = re.compile(r"(?:\\ |(?<![\w`])):(?:py:)?(?P<role>[a-z]+):`(?P<text>[^`]+)`(?!`)")
_LINK = re.compile(r"`(?P<text>[^`<]+?)\s*<(?P<url>[^`>\s]+)>`__?")
_IDENTIFIER = re.compile(r"[A-Za-z_][\w]*(?:\.[A-Za-z_][\w]*)*")
_DIRECTIVE = re.compile(r"^(?P<indent>[ \t]*)\.\. math::[ \t]*(?P<inline>\S.*)?$")
_OPTION = re.compile(r"^:\w+:")
_BORDER = re.compile(r"^[ \t]*=+(?: +=+)+[ \t]*$")

Resolver = Callable[[str], "str | None"]


def _no_resolver(name: str) -> str | None:
    return None


def _code(text: str) -> str:
    """A Markdown code span holding ``text`` verbatim."""
    fence = "``" if "`" in text else "`"
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _display_math(body: str) -> str:
    """The LaTeX of a ``.. math::`` body: blank-line separated equations, aligned together
    when any of them uses ``&``."""
    parts = [p.strip() for p in re.split(r"\n[ \t]*\n", body.strip()) if p.strip()]
    if len(parts) == 1 and "\\\\" not in parts[0] and "&" not in parts[0]:
        return parts[0]
    env = "aligned" if any("&" in p for p in parts) else "gathered"
    return f"\\begin{{{env}}}\n" + " \\\\[0.5em]\n".join(parts) + f"\n\\end{{{env}}}"


def _math_blocks(text: str, keep: Callable[[str], str]) -> str:
    """Replaces every ``.. math::`` directive (and its indented body) by a ``$$`` block at the
    directive's indentation, separated from its neighbours by blank lines."""
    lines = text.split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        match = _DIRECTIVE.match(lines[i])
        if not match:
            out.append(lines[i])
            i += 1
            continue
        indent = match["indent"]
        body = [match["inline"]] if match["inline"] else []
        i += 1
        while i < len(lines):
            line = lines[i]
            if line.strip() and len(line) - len(line.lstrip()) <= len(indent):
                break
            if not body and _OPTION.match(line.strip()):
                i += 1  # :label:, :nowrap: and the like carry nothing we render
                continue
            body.append(line)
            i += 1
        while body and not body[-1].strip():
            body.pop()
        latex = _display_math(textwrap.dedent("\n".join(body)))
        if out and out[-1].strip():
            out.append("")
        out.append(keep(textwrap.indent(f"$$\n{latex}\n$$", indent)))
        out.append("")
        if i < len(lines) and not lines[i].strip():
            i += 1  # the blank line after the body is already there
    return "\n".join(out)


def _cells(line: str, starts: list[int]) -> list[str]:
    """A row's cells, cut at the columns' starts; a cell whose text runs past its column's
    end (reST would refuse it, a reader would not) is cut at the next space instead."""
    cells, start = [], 0
    for end in starts[1:]:
        while end < len(line) and line[end - 1] != " ":
            end += 1
        cells.append(line[start:end].strip())
        start = end
    return [*cells, line[start:].strip()]


def _table(rows: list[str], header: list[str] | None, starts: list[int]) -> list[str]:
    """A Markdown table from the lines of a simple table's body: a line with a blank first
    column continues the row above."""
    cells: list[list[str]] = []
    for line in rows:
        if not line.strip():
            continue
        if cells and not line[:starts[1]].strip():
            cells[-1][-1] += " " + line.strip()
            continue
        cells.append(_cells(line, starts))
    head = header or [""] * len(starts)
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(starts)]
    return out + ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in cells]


def _simple_tables(text: str) -> str:
    """Replaces reST simple tables (columns marked by ``====  ====`` borders) by Markdown
    tables; with three borders, the rows above the second are the header."""
    lines = text.split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        if not _BORDER.match(lines[i]):
            out.append(lines[i])
            i += 1
            continue
        indent = re.match(r"[ \t]*", lines[i])[0]
        starts = [m.start() - len(indent) for m in re.finditer(r"=+", lines[i])]
        borders = [i]
        j = i + 1
        while j < len(lines) and lines[j].strip():
            if _BORDER.match(lines[j]):
                borders.append(j)
            j += 1
        borders = borders[:3]
        if len(borders) < 2:
            out.append(lines[i])
            i += 1
            continue
        body = [line[len(indent):] for line in lines[borders[-2] + 1:borders[-1]]]
        header = None
        if len(borders) == 3:
            header = [" ".join(c) for c in zip(*(
                _cells(lines[k][len(indent):], starts) for k in range(i + 1, borders[1])))]
        out += [indent + row for row in _table(body, header, starts)]
        i = borders[-1] + 1
    return "\n".join(out)


def _xref(role: str, text: str, resolve: Resolver) -> str:
    title, target = text, text
    if match := re.fullmatch(r"(?s)(?P<title>.+?)\s*<(?P<target>[^<>]+)>", text):
        title, target = match["title"], match["target"]
    link = not target.startswith("!")
    target = target.lstrip("!")
    if target.startswith("~"):
        target = target[1:]
        if title == text:
            title = target.rsplit(".", 1)[-1]
    elif title == text:
        title = target
    name = target.removesuffix("()")
    title = " ".join(title.split())
    if not link or not _IDENTIFIER.fullmatch(name):
        return _code(title)
    resolved = resolve(name)
    if resolved is None and "." not in name:
        return _code(title)
    identifier = html.escape(resolved or name, quote=True)
    return f'<autoref identifier="{identifier}" optional>{_code(title)}</autoref>'


def rst_to_markdown(text: str, resolve: Resolver = _no_resolver) -> str:
    """The Markdown rendering of a reST docstring (see the module's docstring).

    Args:
        text: the docstring, dedented as griffe stores it.
        resolve: maps a name as written in a role (``Trainer``, ``torch.Tensor``) to the
            full path of the object it names, or ``None`` where it does not resolve.
    """
    kept: list[str] = []

    def keep(markdown: str) -> str:
        kept.append(markdown)
        return f"\x00{len(kept) - 1}\x00"

    text = _math_blocks(text, keep)
    text = _simple_tables(text)

    def role(match: re.Match) -> str:
        name, body = match["role"], match["text"]
        if name == "math":
            return keep("$" + " ".join(body.split()) + "$")
        if name in ("sup", "sub"):
            return keep(f"<{name}>{html.escape(body)}</{name}>")
        if name in _XREF_ROLES:
            return keep(_xref(name, body, resolve))
        return keep(_code(" ".join(body.split())))

    text = _ROLE.sub(role, text)
    text = _LINK.sub(lambda m: keep(f"[{' '.join(m['text'].split())}]({m['url']})"), text)
    return re.sub("\x00(\\d+)\x00", lambda m: kept[int(m[1])], text)


try:
    import griffe
except ImportError:  # the converter alone (tests) needs no griffe
    griffe = None

if griffe is not None:

    def _resolver(obj: griffe.Object) -> Resolver:
        """Names in ``obj``'s scope: its members, its parents' members and its module's
        imports; a dotted name resolves its first component."""
        missing = (griffe.NameResolutionError, griffe.AliasResolutionError, KeyError)

        def resolve(name: str) -> str | None:
            first, _, rest = name.partition(".")
            try:
                path = obj.resolve(first)
            except missing:
                try:
                    return obj.modules_collection[name].path
                except missing:
                    return None
            return f"{path}.{rest}" if rest else path

        return resolve

    class RstRoles(griffe.Extension):
        """Rewrites each loaded object's docstring from reST to Markdown."""

        def on_object(self, *, obj: griffe.Object, **kwargs) -> None:
            if obj.docstring is not None:
                obj.docstring.value = rst_to_markdown(obj.docstring.value, _resolver(obj))
