"""Accessibility, checked by a real tool and by the book's own rules.

- axe-core (Deque's engine, shipped in the ``axe-playwright-python`` package) runs in Chromium
  over every page and the search page: no violation of serious or critical impact, and none of
  the rules below at any impact (headings in order, a language, a title, one main landmark).
- Every page is ``<html lang="en">``; a chapter's Chinese summary (``div.zh-summary``, 本章小结)
  carries ``lang="zh-Hans"`` (tinylm_course/book_reading.py), so screen readers read it in
  Chinese.
- Every image of a page's content has alt text that says something (not empty, not a file name
  or a hash), and every figure's caption is numbered ("Fig. 3"); an image a cell shows is such a
  figure.

Time: axe takes seconds on a long page, most of it in two rules that look at every piece of
text, color-contrast and link-in-text-block, whose answers depend on the theme's colours and
styles (prose, links, tables, code, exercise boxes): the same on every page. So every rule runs
over the whole of CHECKED_IN_FULL (pages that hold every kind of content: the home page, a
chapter with exercises, figures and formulas, a lab with code and outputs, the glossary's table,
the bibliography, the search page); on every other page every other rule runs, over everything
except the coloured tokens inside code blocks and outputs (the ``pre`` blocks themselves are
still checked) and MathJax's drawing of each formula (``mjx-math``, hidden from screen readers,
which read MathJax's MathML copy instead).
"""

from __future__ import annotations

import re

import pytest

from test_book_in_browser import CHAPTERS, PAGES, listing, loaded

AXE_PAGES = PAGES + ["search.html"]
CHECKED_IN_FULL = {"intro.html", "chapters/slm.html", "labs/lab01_ngrams.html", "chapters/glossary.html",
                   "chapters/bibliography.html", "search.html"}
THEME_ONLY_RULES = ("color-contrast", "link-in-text-block")  # checked on CHECKED_IN_FULL
ON_EVERY_PAGE = {"exclude": [["div.highlight pre"], ["div.cell_output pre"], ["mjx-math"]]}
BLOCKING_IMPACTS = {"serious", "critical"}
ALWAYS_BLOCKING = {
    "heading-order",  # headings in order: no h2 followed by an h4
    "page-has-heading-one",
    "empty-heading",
    "html-has-lang",
    "html-lang-valid",
    "valid-lang",  # lang="zh-Hans" on the Chinese summaries must be a valid language
    "document-title",
    "landmark-one-main",
    "image-alt",
}

RUN_AXE = """async ([context, options]) => {
    const results = await axe.run(context === null ? document : context, options);
    return results.violations.map(v => ({
        id: v.id, impact: v.impact, help: v.help,
        nodes: v.nodes.map(n => n.target.join(' ') + (n.failureSummary
            ? ' -- ' + n.failureSummary.replace(/\\s+/g, ' ').replace(/^Fix (any|all) of the following: ?/, '').slice(0, 160)
            : '')),
    }));
}"""


def axe_violations(page, axe_script: str, path: str) -> list[dict]:
    if not page.evaluate("() => typeof window.axe !== 'undefined'"):
        page.evaluate(axe_script)
    # preload false: axe would otherwise fetch every stylesheet again to build its own CSSOM, and
    # resolves the theme's `@import "../basic.css"` against the page, not the stylesheet: a 404
    # that the page's own checks (no failed request, no console error) then see.
    options = {"resultTypes": ["violations"], "preload": False}
    if path in CHECKED_IN_FULL:
        return page.evaluate(RUN_AXE, [None, options])
    options["rules"] = {rule: {"enabled": False} for rule in THEME_ONLY_RULES}
    return page.evaluate(RUN_AXE, [ON_EVERY_PAGE, options])


@pytest.mark.parametrize("path", AXE_PAGES)
def test_axe_finds_no_serious_violation(visit, axe_script, path):
    page = loaded(visit, path).page
    violations = axe_violations(page, axe_script, path)
    blocking = [v for v in violations if v["impact"] in BLOCKING_IMPACTS or v["id"] in ALWAYS_BLOCKING]
    report = "".join(f"\n  [{v['impact']}] {v['id']}: {v['help']} ({len(v['nodes'])} elements){listing(v['nodes'][:5])}"
                     for v in blocking)
    assert not blocking, f"{path}: axe-core finds these accessibility violations:{report}"


@pytest.mark.parametrize("path", PAGES)
def test_page_language_is_english(visit, path):
    lang = loaded(visit, path).page.evaluate("() => document.documentElement.getAttribute('lang')")
    assert lang == "en", f'{path}: <html lang="{lang}">, expected <html lang="en">'


@pytest.mark.parametrize("path", CHAPTERS)
def test_chinese_summary_is_marked_chinese(visit, path):
    summaries = loaded(visit, path).page.evaluate("""() => Array.from(document.querySelectorAll('div.zh-summary'))
        .map(div => ({lang: div.getAttribute('lang'), chinese: /[\\u3400-\\u9fff]/.test(div.innerText)}))""")
    assert summaries, (f"{path} has no Chinese summary: end the chapter with ```{{container}} zh-summary``` "
                       f"(本章小结)")
    for summary in summaries:
        assert summary["lang"] == "zh-Hans", (
            f'{path}: the Chinese summary is <div class="zh-summary" lang="{summary["lang"]}">, expected lang="zh-Hans" '
            f"(tinylm_course.book_reading must be in _config.yml's extra_extensions)")
        assert summary["chinese"], f"{path}: the Chinese summary (div.zh-summary) has no Chinese text"


# An alt text that says nothing: empty, a file name, a hash (myst-nb names output images by their
# hash, and used to copy that name into the alt text), or the words "image"/"png"/"output".
MEANINGLESS_ALT = re.compile(r"""^\s*$|\.(png|jpe?g|svg|gif|webp)\s*$|^[0-9a-f]{16,}$|^(image|img|png|svg|figure|output|plot)\s*\d*$""",
                             re.I)

CONTENT_IMAGES = """() => Array.from(document.querySelectorAll('article.bd-article img')).map(img => ({
    src: (img.getAttribute('src') || '').split('/').pop(),
    alt: img.getAttribute('alt'),
    in_cell_output: !!img.closest('.cell_output'),
    figure: img.closest('figure') ? (img.closest('figure').querySelector('figcaption')?.innerText || '').trim() : null,
}))"""

CAPTIONS = """() => Array.from(document.querySelectorAll('article.bd-article figure')).map(figure => ({
    caption: (figure.querySelector('figcaption')?.innerText || '').trim().replace(/\\s+/g, ' '),
    numbered: !!figure.querySelector('figcaption .caption-number'),
}))"""
FIG_NUMBER = re.compile(r"^Fig\. \d+(\.\d+)*\b")


@pytest.mark.parametrize("path", PAGES)
def test_images_have_meaningful_alt_text(visit, path):
    images = loaded(visit, path).page.evaluate(CONTENT_IMAGES)
    bad = [f"{image['src']}: alt={image['alt']!r}" for image in images
           if image["alt"] is None or MEANINGLESS_ALT.search(image["alt"])
           or image["alt"].strip() == image["src"]]
    assert not bad, (f"{path}: these images have no alt text that says what they show:{listing(bad)}\n"
                     f"(give the cell mystnb: image: alt: ...; see CONTRIBUTING.md and the figure pattern)")


@pytest.mark.parametrize("path", PAGES)
def test_figures_have_numbered_captions(visit, path):
    page = loaded(visit, path).page
    figures = page.evaluate(CAPTIONS)
    unnumbered = [figure["caption"][:80] or "(no caption)" for figure in figures
                  if not (figure["numbered"] and FIG_NUMBER.match(figure["caption"]))]
    assert not unnumbered, f"{path}: these figures have no numbered caption ('Fig. N ...'):{listing(unnumbered)}"
    loose = [image["src"] for image in page.evaluate(CONTENT_IMAGES)
             if image["in_cell_output"] and not (image["figure"] and FIG_NUMBER.match(image["figure"]))]
    assert not loose, (f"{path}: these images shown by a cell are not figures with a numbered caption:{listing(loose)}\n"
                       f"(give the cell mystnb: figure: caption: ... name: fig-...)")
