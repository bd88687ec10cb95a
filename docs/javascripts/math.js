// Typesets the formulas that pymdownx.arithmatex (generic mode) marks, with the KaTeX copy
// under assets/katex: no network needed. Inline math arrives as \(...\), display math as
// \[...\]; Material's document$ fires on every page load, instant navigation included.
document$.subscribe(() => {
  for (const element of document.querySelectorAll(".arithmatex")) {
    const source = element.textContent.trim();
    katex.render(source.slice(2, -2), element, {
      displayMode: source.startsWith("\\["),
      throwOnError: false,
    });
  }
});
