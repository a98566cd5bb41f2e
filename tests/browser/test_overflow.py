"""Nothing clipped: on every page, at a desktop's 1280 px and a phone's 390 px, no content is
wider than its box unless it scrolls.

A wide display formula, a code cell, an output or a table may be wider than the column: it must
then scroll sideways inside the column (or wrap), never be cut off or run past the column, and
the page itself must never scroll sideways. The book's fixes are in ``_static/tinylm.css``.

Each page is the one ``test_book_in_browser.py`` loaded at 1280 px (``visit``); it is measured,
resized to 390 px, measured again, and given back its size.
"""

from __future__ import annotations

import pytest

from test_book_in_browser import PAGES, listing, loaded

WIDTHS = (1280, 390)

# Elements whose content is wider than their box (scrollWidth > clientWidth) and whose computed
# overflow-x is not auto or scroll, leaving out those inside an ancestor that scrolls. Of those,
# the ones a reader loses: clipped (overflow hidden or clip), or spilling past the article's
# column, past the box that clips them, or past the window. Inline boxes (a word, an inline
# formula that does not clip) are measured through the block that holds them; MathJax's hidden
# copy of each formula for screen readers, clipped on purpose, is left out. Only the innermost
# element is named (a paragraph that spills makes its section spill too).
OVERFLOW = """() => {
    const scrolls = el => /(auto|scroll)/.test(getComputedStyle(el).overflowX);
    const describe = el => {
        let name = el.tagName.toLowerCase();
        if (el.id) name += '#' + el.id;
        const classes = (typeof el.className === 'string' ? el.className : '').trim().split(/\\s+/).filter(Boolean);
        if (classes.length) name += '.' + classes.slice(0, 3).join('.');
        const text = (el.innerText || el.textContent || '').trim().replace(/\\s+/g, ' ').slice(0, 70);
        return `${name}: content ${el.scrollWidth}px wide in a ${el.clientWidth}px box`
            + (getComputedStyle(el).overflowX === 'visible' ? '' : ' that clips it')
            + (text ? `: "${text}"` : '');
    };
    const limit = el => {
        let right = document.documentElement.clientWidth;
        const article = el.closest('article.bd-article');
        if (article && article !== el) {
            right = Math.min(right, article.getBoundingClientRect().right
                                    - parseFloat(getComputedStyle(article).paddingRight));
        }
        for (let a = el.parentElement; a && a !== document.documentElement; a = a.parentElement) {
            if (getComputedStyle(a).overflowX !== 'visible') {
                right = Math.min(right, a.getBoundingClientRect().left + a.clientLeft + a.clientWidth);
                break;
            }
        }
        return right;
    };
    const hide = document.createElement('style');
    hide.textContent = 'mjx-assistive-mml { display: none !important; }';
    document.head.appendChild(hide);
    const found = [];
    try {
        for (const el of document.querySelectorAll('body *')) {
            if (el.clientWidth === 0 || el.scrollWidth <= el.clientWidth + 1 || scrolls(el)) continue;
            const style = getComputedStyle(el);
            const clips = /(hidden|clip)/.test(style.overflowX);
            if (style.display.startsWith('inline') && !clips) continue;
            if (el.parentElement && el.parentElement.closest('mjx-container')) continue;
            if (style.visibility === 'hidden' || el.closest('dialog:not([open])')) continue;
            const box = el.getBoundingClientRect();
            if (box.width <= 2 || box.height <= 2) continue;  // hidden on purpose (screen-reader text)
            let inside = false;
            for (let a = el.parentElement; a && a !== document.body; a = a.parentElement) {
                if (scrolls(a)) { inside = true; break; }
            }
            if (inside) continue;
            if (clips || box.left + el.clientLeft + el.scrollWidth > limit(el) + 1) found.push(el);
        }
    } finally {
        hide.remove();
    }
    const problems = found.filter(el => !found.some(other => other !== el && el.contains(other))).map(describe);
    const root = document.documentElement;
    if (root.scrollWidth > root.clientWidth + 1)
        problems.push(`the page scrolls sideways: ${root.scrollWidth}px wide in a ${root.clientWidth}px window`);
    return problems;
}"""

# Two animation frames: the browser has laid the page out again after a resize.
SETTLED = "() => new Promise(done => requestAnimationFrame(() => requestAnimationFrame(() => done(true))))"


def overflow_at(page, width: int) -> list[str]:
    size = page.viewport_size
    page.set_viewport_size({"width": width, "height": size["height"]})
    page.evaluate(SETTLED)
    return page.evaluate(OVERFLOW)


@pytest.mark.parametrize("path", PAGES)
def test_nothing_is_clipped(visit, path):
    page = loaded(visit, path).page
    size = page.viewport_size
    try:
        problems = {width: overflow_at(page, width) for width in WIDTHS}
    finally:
        page.set_viewport_size(size)
    report = "".join(f"\nat {width} px:{listing(found)}" for width, found in problems.items() if found)
    assert not report, (
        f"{path}: content is cut off or runs past the column instead of scrolling inside it{report}\n"
        f"(wide formulas, code, outputs and tables must scroll sideways or wrap: _static/tinylm.css)")
