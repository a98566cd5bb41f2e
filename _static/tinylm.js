/* The book's own script (Jupyter Book 1 loads every JS file of _static/ on every page).

   The navigation drawers on phones and tablets. sphinx-book-theme 1.3.0 puts its own "Toggle
   primary sidebar" and "Toggle secondary sidebar" buttons in the article's header, while
   pydata-sphinx-theme 0.17 attaches its drawer (a <dialog>) only to the *first* element of
   class .primary-toggle / .secondary-toggle on the page: its own button in a header that
   sphinx-book-theme hides. So below 992 px the visible buttons did nothing. Here a click on any
   other toggle is handed to that first one, which both themes listen to (pydata opens the
   drawer; at 992 px and wider sphinx-book-theme hides or shows the sidebar instead).
   And a link followed in an open drawer closes it: pydata leaves "On this page" open over the
   section the reader asked for.
   tests/browser/test_small_screens.py opens both drawers at 390 and 768 px and follows a link
   in each. */
(function () {
    "use strict";
    document.addEventListener("click", function (event) {
        if (!(event.target instanceof Element)) return;
        var button = event.target.closest(".primary-toggle, .secondary-toggle");
        if (!button) return;
        var kind = button.classList.contains("primary-toggle") ? ".primary-toggle" : ".secondary-toggle";
        var first = document.querySelector(kind);
        if (!first || first === button) return;
        event.preventDefault();
        event.stopPropagation();
        first.click();
    }, true);

    document.addEventListener("click", function (event) {
        if (!(event.target instanceof Element)) return;
        var link = event.target.closest("dialog[open] a[href]");
        if (link) link.closest("dialog").close();
    });
})();
