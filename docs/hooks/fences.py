"""MkDocs hook: tutorials mark code blocks that continue the previous one as
```` ```python continuation ```` for pytest-markdown-docs, which executes them in order.
SuperFences reads the whole info string as the language and renders such a block as prose,
so the marker is dropped before the page is rendered (the tests read the source files)."""
import re

_CONTINUATION = re.compile(r"^(\s*```+\s*python)\s+continuation\s*$", re.MULTILINE)


def on_page_markdown(markdown: str, **kwargs) -> str:
    return _CONTINUATION.sub(r"\1", markdown)
