"""The documentation site builds with warnings as errors, renders the docstrings' reST, and
needs no network for its math. Skipped where the docs extra (mkdocs) is not installed."""
import html
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("mkdocs")
pytest.importorskip("mkdocstrings_handlers.python")

ROOT = Path(__file__).resolve().parents[2]
RAW_REST = re.compile(r":(?:math|class|func|meth|attr|mod|data|obj|exc|sup):(?:`|<code>)|\.\. math::")
FORMULA = re.compile(r'<(span|div) class="arithmatex">(.*?)</\1>', re.DOTALL)


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d",
                           str(out)], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def pages(site: Path) -> dict[str, str]:
    return {str(p.relative_to(site)): p.read_text(encoding="utf-8")
            for p in site.rglob("*.html")}


def test_api_reference_has_no_raw_rest(site):
    found = {name: RAW_REST.findall(page) for name, page in pages(site).items()}
    assert not {name: hits for name, hits in found.items() if hits}
    api = (site / "api" / "index.html").read_text(encoding="utf-8")
    # the docstrings' math arrives as formulas, their references as links into the page
    assert len(FORMULA.findall(api)) > 100
    assert api.count('class="autorefs autorefs-internal"') > 50


def test_no_page_loads_anything_from_another_host(site):
    remote = re.compile(r'<(?:script|link)\b[^>]*\b(?:src|href)="(?:https?:)?//[^"]*"')
    loads = {name: remote.findall(page) for name, page in pages(site).items()}
    assert not {name: hits for name, hits in loads.items() if hits}
    for asset in ("assets/katex/katex.min.js", "assets/katex/katex.min.css",
                  "assets/katex/fonts/KaTeX_Main-Regular.woff2", "javascripts/math.js"):
        assert (site / asset).is_file(), asset


@pytest.mark.skipif(shutil.which("node") is None, reason="needs node to run KaTeX")
def test_every_formula_typesets_with_katex(site):
    formulas = [[kind == "div", html.unescape(body).strip()[2:-2]]
                for page in pages(site).values() for kind, body in FORMULA.findall(page)]
    script = """
    const katex = require(process.argv[1]);
    const formulas = JSON.parse(require("fs").readFileSync(0, "utf8"));
    const failed = [];
    for (const [display, tex] of formulas) {
      try { katex.renderToString(tex, {displayMode: display, throwOnError: true,
                                       strict: "error"}); }
      catch (e) { failed.push(e.message.slice(0, 200)); }
    }
    console.log(JSON.stringify(failed));
    """
    done = subprocess.run(["node", "-e", script, str(ROOT / "docs/assets/katex/katex.min.js")],
                          input=json.dumps(formulas), capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert formulas and json.loads(done.stdout) == []


def test_cli_reference_has_every_command(site):
    import click

    from disentangle_cli.main import main

    page = (site / "cli" / "index.html").read_text(encoding="utf-8")
    ctx = click.Context(main, info_name="disentangle")
    commands = main.list_commands(ctx)
    assert "fit" in commands
    for name in commands:
        assert f"Usage: disentangle {name} [OPTIONS]" in page, name

