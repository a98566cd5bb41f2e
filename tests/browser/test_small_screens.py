"""The book on a phone (390 x 844) and a tablet (768 x 1024).

Below 992 px the theme hides both sidebars behind buttons in the page's header: the book's
contents (the primary sidebar, a drawer from the left) and the page's own contents ("On this
page", the secondary sidebar). A reader opens the first, follows a link in it to another page,
opens that page's contents and follows an entry there; no element of either page is wider
than the window, except code and formulas that scroll inside their own box.
(With sphinx-book-theme 1.3.0 the drawers did not open: see _static/tinylm.js.)
"""

from __future__ import annotations

import pytest

from test_book_in_browser import listing

SCREENS = {"phone": (390, 844), "tablet": (768, 1024)}
START = "chapters/slm.html"
TARGET = "chapters/transformer.html"  # followed from the drawer

# Visible elements reaching outside the window, left or right, that do not sit inside something
# that scrolls sideways (a code cell, a wide formula): the innermost of them.
WIDER_THAN_WINDOW = """() => {
    const width = document.documentElement.clientWidth;
    const scrolls = el => /(auto|scroll)/.test(getComputedStyle(el).overflowX);
    const found = [];
    for (const el of document.querySelectorAll('body *')) {
        const box = el.getBoundingClientRect();
        if (box.width <= 2 || box.height <= 2 || (box.left >= -1 && box.right <= width + 1)) continue;
        const style = getComputedStyle(el);
        if (style.visibility === 'hidden' || style.display === 'none') continue;
        if (el.closest('dialog:not([open])') || el.closest('mjx-assistive-mml')) continue;
        let inside = false;
        for (let a = el.parentElement; a && a !== document.body; a = a.parentElement) {
            if (scrolls(a)) { inside = true; break; }
        }
        if (!inside) found.push(el);
    }
    const name = el => el.tagName.toLowerCase() + (el.id ? '#' + el.id : '')
        + ((typeof el.className === 'string' && el.className.trim()) ? '.' + el.className.trim().split(/\\s+/).slice(0, 3).join('.') : '');
    const problems = found.filter(el => !found.some(other => other !== el && el.contains(other))).map(el => {
        const box = el.getBoundingClientRect();
        const text = (el.innerText || '').trim().replace(/\\s+/g, ' ').slice(0, 60);
        return `${name(el)} spans ${Math.round(box.left)}..${Math.round(box.right)}px of a ${width}px window${text ? ': "' + text + '"' : ''}`;
    });
    if (document.documentElement.scrollWidth > width + 1)
        problems.push(`the page scrolls sideways: ${document.documentElement.scrollWidth}px wide`);
    return problems;
}"""

# Wait until sliding drawers and other transitions have finished.
SETTLED = "() => Promise.all(document.getAnimations().map(a => a.finished.catch(() => null))).then(() => true)"
DIALOG_OPEN = "selector => { const d = document.querySelector(selector); return d && d.open; }"


def visible_button(page, css: str, what: str):
    buttons = page.locator(f"{css}:visible")
    assert buttons.count() >= 1, f"{page.url}: no visible button to open {what} ({css})"
    return buttons.first


def open_drawer(page, toggle: str, dialog: str, what: str):
    """Click the visible button ``toggle``; the drawer ``dialog`` must open, fully on screen."""
    visible_button(page, toggle, what).click()
    try:
        page.wait_for_function(DIALOG_OPEN, arg=dialog, timeout=3_000)
    except Exception:
        pytest.fail(f"{page.url}: clicking the button ({toggle}) did not open {what} ({dialog})", pytrace=False)
    box = page.locator(dialog).bounding_box()
    width = page.viewport_size["width"]
    assert box and box["width"] > 200 and box["x"] >= -1 and box["x"] + box["width"] <= width + 1, (
        f"{page.url}: {what} is open but not on screen: {box} in a {width}px window")
    return page.locator(dialog)


def assert_fits(page, where: str):
    page.evaluate(SETTLED)
    problems = page.evaluate(WIDER_THAN_WINDOW)
    assert not problems, f"{where}: these are wider than the window and do not scroll:{listing(problems)}"


@pytest.mark.parametrize("screen", SCREENS)
def test_drawers_open_and_pages_fit(screen, visit_at):
    width, height = SCREENS[screen]
    start = visit_at(START, width, height)
    page = start.page
    assert start.status == 200, f"{START} answered HTTP {start.status}"
    assert_fits(page, f"{START} on a {screen} ({width} px)")

    # 1. The book's contents, and a link in it.
    drawer = open_drawer(page, "button.primary-toggle", "dialog#pst-primary-sidebar-modal", "the book's contents")
    links = drawer.locator("nav.bd-links a.reference.internal:visible")
    assert links.count() >= 10, f"{START}: the book's contents drawer shows {links.count()} links"
    drawer.locator(f"a[href$='{TARGET.split('/')[-1]}']").first.click()
    page.wait_for_url(f"**/{TARGET}*")
    page.wait_for_load_state("load")
    assert_fits(page, f"{TARGET} on a {screen} ({width} px)")

    # 2. The page's own contents, and an entry in it.
    toc = open_drawer(page, "button.secondary-toggle", "dialog#pst-secondary-sidebar-modal", "the page's contents")
    entries = toc.locator("nav.page-toc a.nav-link:visible, #pst-page-toc-nav a.nav-link:visible")
    assert entries.count() >= 3, f"{TARGET}: 'On this page' shows {entries.count()} entries"
    entry = entries.nth(2)
    anchor = entry.get_attribute("href")
    assert anchor and anchor.startswith("#"), f"{TARGET}: the page's contents link {anchor!r}, not a section"
    entry.click()
    page.wait_for_function(DIALOG_OPEN.replace("d && d.open", "d && !d.open"), arg="dialog#pst-secondary-sidebar-modal",
                           timeout=3_000)
    assert page.evaluate("() => location.hash") == anchor, f"{TARGET}: following {anchor} did not go there"
    heading = page.locator(f"[id='{anchor[1:]}']")
    top = heading.bounding_box()["y"]
    assert 0 <= top < height, f"{TARGET}: after following {anchor} the section starts at y={top:.0f}, off screen"
    assert_fits(page, f"{TARGET} after following {anchor}")
