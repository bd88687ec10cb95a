"""The docs' reST -> Markdown docstring converter (docs/hooks/rst_roles.py), on hand-written
cases."""
import importlib.util
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[2] / "docs" / "hooks" / "rst_roles.py"
_spec = importlib.util.spec_from_file_location("rst_roles", _PATH)
rst_roles = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(rst_roles)
convert = rst_roles.rst_to_markdown

KNOWN = {"Trainer": "disentangle.train.trainer.Trainer", "fit": "disentangle.train.run.fit"}


def resolve(name):
    first, _, rest = name.partition(".")
    return KNOWN[first] + ("." + rest if rest else "") if first in KNOWN else None


def link(identifier, title):
    return f'<autoref identifier="{identifier}" optional>`{title}`</autoref>'


@pytest.mark.parametrize("rst, markdown", [
    (r"weight :math:`\tau` of it", r"weight $\tau$ of it"),
    (r"with :math:`K = 1`, :math:`\mathbf{x}_u`.", r"with $K = 1$, $\mathbf{x}_u$."),
    # a role broken over two lines becomes one inline formula
    ("e.g. :math:`1/\\sqrt{|N(u)|\n    |N(v)|}`; one", "e.g. $1/\\sqrt{|N(u)| |N(v)|}$; one"),
    ("``B x K`` stays", "``B x K`` stays"),
    (":obj:`None` and :obj:`output=\"linear\"`", '`None` and `output="linear"`'),
    (":class:`~disentangle.runs.RunFolder`", link("disentangle.runs.RunFolder", "RunFolder")),
    (":func:`disentangle.train.run.load_run`",
     link("disentangle.train.run.load_run", "disentangle.train.run.load_run")),
    (":class:`Trainer`", link("disentangle.train.trainer.Trainer", "Trainer")),
    (":meth:`Trainer.fit`", link("disentangle.train.trainer.Trainer.fit", "Trainer.fit")),
    (":func:`fit()`", link("disentangle.train.run.fit", "fit()")),
    (":func:`the fit <fit>`", link("disentangle.train.run.fit", "the fit")),
    (":class:`!Trainer`", "`Trainer`"),
    # an unknown bare name is code only; an unknown dotted one keeps an optional link
    (":class:`ValueError`", "`ValueError`"),
    (":class:`~torch.nn.Module`", link("torch.nn.Module", "Module")),
    (":py:func:`fit`", link("disentangle.train.run.fit", "fit")),
    (r"Mult-VAE\ :sup:`PR` model", "Mult-VAE<sup>PR</sup> model"),
    (":file:`a.yaml`", "`a.yaml`"),
    ('the `"Paper\n    Title" <https://x.org/a>`_ paper', 'the ["Paper Title"](https://x.org/a) paper'),
    # roles inside a code span are not roles
    ("``:math:`x```", "``:math:`x```"),
])
def test_inline(rst, markdown):
    assert convert(rst, resolve) == markdown


def test_math_block_at_top_level():
    rst = "Each trial maximises\n\n.. math::\n    v(\\theta) = \\max_e m(e),\n\nthe best value."
    assert convert(rst) == (
        "Each trial maximises\n\n$$\nv(\\theta) = \\max_e m(e),\n$$\n\nthe best value."
    )


def test_math_block_keeps_its_indentation_and_gets_blank_lines():
    rst = ("Args:\n    x (int): the sum\n        .. math::\n            :label: eq\n\n"
           "            a = b\n              + c\n        after")
    assert convert(rst) == (
        "Args:\n    x (int): the sum\n\n        $$\n        a = b\n          + c\n        $$\n\n"
        "        after"
    )


def test_aligned_equations_share_one_environment():
    rst = ".. math::\n    p &= 1\n\n    q &\\leftarrow 2\n"
    assert convert(rst) == (
        "$$\n\\begin{aligned}\np &= 1 \\\\[0.5em]\nq &\\leftarrow 2\n\\end{aligned}\n$$\n"
    )


def test_unaligned_equations_are_gathered():
    rst = ".. math::\n    a = 1\n\n    b = 2\n"
    assert convert(rst) == "$$\n\\begin{gathered}\na = 1 \\\\[0.5em]\nb = 2\n\\end{gathered}\n$$\n"


def test_math_is_kept_verbatim():
    # LaTeX's backslash-space, underscores and stars are not reST or Markdown here
    rst = r":math:`B_{ij} = -P_{ij} \ (i \ne j) * 2`"
    assert convert(rst) == r"$B_{ij} = -P_{ij} \ (i \ne j) * 2$"


def test_text_without_rest_is_unchanged():
    text = "Plain *Markdown* with `code`, [a link](x.md) and\n\n    an indented block."
    assert convert(text) == text


def test_simple_table_without_header():
    rst = (
        "Files:\n\n"
        "=========  ==========\n"
        "``a.json``  the first, which runs\n"   # a first cell wider than its column
        "           on\n"
        "``b``      :math:`x` here\n"
        "=========  ==========\n\n"
        "after"
    )
    assert convert(rst) == (
        "Files:\n\n|  |  |\n|---|---|\n"
        "| ``a.json`` | the first, which runs on |\n| ``b`` | $x$ here |\n\nafter"
    )


def test_simple_table_with_header_and_pipes():
    rst = "  ===  =====\n  k    value\n  ===  =====\n  1    a |b|\n  ===  =====\n"
    assert convert(rst) == "  | k | value |\n  |---|---|\n  | 1 | a \\|b\\| |\n"
