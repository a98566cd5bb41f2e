"""The book's search, in Chinese and in English, typed into the search page as a reader does.

Sphinx indexes the book with its Chinese search language (``html_search_language: zh`` in
_config.yml): Chinese cut into words by jieba, English stemmed as the English search does
(tinylm_course/book_reading.py). With the English indexer a run of Chinese characters was one
"word" and searching 模型 found nothing.

A query must find pages, every page found must contain the term (or, in English, a word of the
same stem), and a page known to contain the term must be among them.
"""

from __future__ import annotations

import html
import re
from pathlib import Path
from urllib.parse import quote, urlsplit

import pytest

from test_book_in_browser import PAGES, listing, loaded

# term -> words a page found for it must contain (the term itself; for English, its inflections)
QUERIES = {
    "模型": ["模型"],
    "掩码": ["掩码"],
    "分词": ["分词"],
    "perplexity": ["perplexity", "perplexities"],
    "smoothing": ["smoothing", "smoothed", "smooth"],
}
RESULTS_DONE = """() => {
    const summary = document.querySelector('#search-results .search-summary, #search-results p');
    return summary && /found|did not match/i.test(summary.innerText) ? summary.innerText : null;
}"""
RESULT_LINKS = "() => Array.from(document.querySelectorAll('#search-results ul.search li a')).map(a => a.href)"
INDEX_LIMIT_BYTES = 2_000_000


def page_text(book_html: Path, page: str) -> str:
    """The words of a built page's article (tags, scripts and styles removed); "" for a page
    that was not built (test_book_in_browser.py reports it)."""
    if not (book_html / page).is_file():
        return ""
    text = (book_html / page).read_text(encoding="utf-8")
    match = re.search(r"<article[^>]*>(.*)</article>", text, re.S)
    body = re.sub(r"<(script|style)\b.*?</\1>", " ", match.group(1) if match else text, flags=re.S)
    return html.unescape(re.sub(r"<[^>]+>", " ", body))


def page_of(url: str, base_url: str) -> str:
    return urlsplit(url).path.removeprefix(urlsplit(base_url).path)


@pytest.mark.parametrize("term", QUERIES)
def test_search_finds_the_pages_that_use_a_term(visit, base_url, book_html, term):
    words = QUERIES[term]
    containing = [page for page in PAGES if any(word in page_text(book_html, page).lower() for word in words)]
    assert containing, f"no page of the book contains {term!r}: choose another search term for this test"

    page = loaded(visit, f"search.html?q={quote(term)}").page
    try:
        summary = page.wait_for_function(RESULTS_DONE, timeout=15_000).json_value()
    except Exception:
        pytest.fail(f"searching {term!r}: the search page never said how many pages it found", pytrace=False)
    found = sorted({page_of(url, base_url) for url in page.evaluate(RESULT_LINKS)})
    assert found, f"searching {term!r} finds nothing ({summary!r}); pages containing it:{listing(containing)}"
    unknown = [p for p in found if p not in PAGES]
    assert not unknown, f"searching {term!r} links pages that are not in the book:{listing(unknown)}"
    wrong = [p for p in found if not any(word in page_text(book_html, p).lower() for word in words)]
    assert not wrong, f"searching {term!r} finds pages that do not contain {words}:{listing(wrong)}"
    assert set(found) & set(containing), (
        f"searching {term!r} finds{listing(found)}\nbut none of the pages that contain it:{listing(containing)}")


def test_search_index_stays_small(book_html):
    """Indexing Chinese words must not blow up the index every page of the book loads."""
    size = (book_html / "searchindex.js").stat().st_size
    assert size < INDEX_LIMIT_BYTES, f"searchindex.js is {size:,} bytes (limit {INDEX_LIMIT_BYTES:,})"
