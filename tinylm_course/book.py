"""A small Sphinx extension for the course book (loaded from ``_config.yml``).

It does what the stock Jupyter Book does not, and makes the glossary:

1. **Math renders offline.**  MathJax 3.2.2 ships inside the pinned PyPI package
   ``django-static-mathjax``; the extension copies the parts the book uses into
   ``_static/mathjax/`` of the built site and points Sphinx at them, so no page loads a
   script from the network.
2. **The role** ``{exercise-binder}`\\`lab01_ngrams\\``` links the *exercise edition* of a lab
   (``exercises/lab01_ngrams.ipynb``) in Binder; chapters use it to send readers to a lab.
   The Binder address is built from the ``repository`` and ``launch_buttons`` sections of
   ``_config.yml``, the one place the repository URL lives.
3. **Buttons that fit the page.**  A lab page shows the worked lab (solutions folded), but its
   launch (Binder) and download (.ipynb) buttons give the *exercise edition*, the notebook a
   student fills in and hands in; a note at the top of the page says so, links the worked lab
   for self-study and says how to hand work in.  Chapters are MyST Markdown notebooks that
   Binder would open as plain text (jupytext is not installed there), so they show no launch
   button; their download buttons stay.  (sphinx-book-theme 1.3.0 and 1.4.0 build the buttons
   the same way, in ``header_buttons/launch.py``; this rewrites their entries afterwards.)
4. **Quiet kernels.**  ipykernel warns on every start that its TCP transport is unencrypted
   (nine warnings per build, one per executed chapter).  The kernels are local, but the fix
   is the one the warning asks for: the kernel manager provisions CurveZMQ keys
   (``transport_encryption = "auto"``), which the Python kernel's spec declares it supports.
5. **No script twice.**  With Sphinx 7.4, sphinx-thebe 0.3.1 (a dependency of Jupyter Book 1)
   adds its inline script to every page twice, and the second copy throws a ``SyntaxError``
   in the browser; the extension drops repeated scripts from each page.

The glossary page (``chapters/glossary.md``) calls :func:`glossary_markdown`, which gathers the
"Key terms" table (English | 中文) that ends every chapter, so the two never disagree.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
from pathlib import Path
from urllib.parse import quote

from docutils import nodes

MATHJAX_PACKAGE = "django-static-mathjax==3.2.2.1"
MATHJAX_ENTRY = "tex-chtml.js"
MATHJAX_PARTS = (MATHJAX_ENTRY, "input", "output/chtml", "a11y", "ui", "adaptors")
"""The MathJax 3 bundle the book loads and the folders it may load components from."""


def mathjax_source() -> Path:
    """The es5 folder of the installed MathJax, or a clear error naming the package."""
    spec = importlib.util.find_spec("mathjax")
    folder = Path(list(spec.submodule_search_locations)[0]) / "static" / "mathjax" / "es5" if spec else None
    if folder is None or not (folder / MATHJAX_ENTRY).is_file():
        raise FileNotFoundError(
            "MathJax is not installed, so the book's math cannot render offline; install it with:\n"
            f"    pip install --no-deps {MATHJAX_PACKAGE}")
    return folder


def copy_mathjax(outdir: Path) -> Path:
    """Copy MathJax's parts into ``outdir/_static/mathjax``; return that folder."""
    source, target = mathjax_source(), Path(outdir) / "_static" / "mathjax"
    for part in MATHJAX_PARTS:
        src, dst = source / part, target / part
        if src.is_dir():
            shutil.copytree(src, dst, dirs_exist_ok=True)
        else:
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
    return target


def binder_url(theme_options: dict, path: str) -> str:
    """The Binder address that opens ``path`` (relative to the repository) in JupyterLab,
    built the way sphinx-book-theme builds a page's launch button."""
    repo = str(theme_options.get("repository_url", "")).rstrip("/")
    hub = str(theme_options.get("launch_buttons", {}).get("binderhub_url", "")).rstrip("/")
    if not repo.startswith("https://github.com/") or not hub:
        raise ValueError("_config.yml needs repository.url (a GitHub repository) and launch_buttons.binderhub_url")
    org_repo = repo.removeprefix("https://github.com/")
    branch = theme_options.get("repository_branch", "main")
    return f"{hub}/v2/gh/{org_repo}/{quote(branch)}?urlpath={quote('lab/tree/' + path)}"


def exercise_binder_role(name, rawtext, text, lineno, inliner, options=None, content=None):
    """``{exercise-binder}`LAB``` -> a link opening ``exercises/LAB.ipynb`` in Binder."""
    env = inliner.document.settings.env
    lab = text.strip()
    root = Path(env.srcdir)
    if not (root / "exercises" / f"{lab}.ipynb").is_file():
        msg = inliner.reporter.error(f"exercise-binder: there is no exercises/{lab}.ipynb "
                                     f"(make it with: python -m tinylm_course exercise labs/{lab}.ipynb)", line=lineno)
        return [inliner.problematic(rawtext, rawtext, msg)], [msg]
    try:
        url = binder_url(env.config.html_theme_options, f"exercises/{lab}.ipynb")
    except ValueError as exc:
        msg = inliner.reporter.error(f"exercise-binder: {exc}", line=lineno)
        return [inliner.problematic(rawtext, rawtext, msg)], [msg]
    link = nodes.reference(rawtext, "exercise edition in Binder", refuri=url,
                           classes=["exercise-binder"])
    return [link], []


LAB_PAGE = re.compile(r"labs/(lab(\d+)_\w+)")
"""A lab's page name (``labs/lab01_ngrams``): its file stem and its number."""

TEACHING_PAGE = "chapters/teaching"
"""The teachers' page: how to set a lab, collect notebooks and grade them."""


def lab_of(pagename: str, root: Path) -> str | None:
    """The lab stem of a lab page that has an exercise edition (``labs/lab01_ngrams`` ->
    ``lab01_ngrams``), else None."""
    match = LAB_PAGE.fullmatch(pagename)
    if match and (Path(root) / "exercises" / f"{match.group(1)}.ipynb").is_file():
        return match.group(1)
    return None


def _buttons(entries):
    """Every button in the theme's header buttons, groups opened."""
    for entry in entries:
        yield entry
        yield from _buttons(entry.get("buttons") or [])


def fit_header_buttons(buttons: list, lab: str | None, edition_url: str, binder: str | None) -> list:
    """The theme's header buttons (``context["header_buttons"]``) changed to fit the page.

    On a lab page (``lab`` given) the Binder button opens ``binder`` and the notebook download
    is ``edition_url``: both the exercise edition.  Elsewhere the launch group is dropped.
    """
    if lab is None:
        buttons[:] = [b for b in buttons if b.get("label") != "launch-buttons"]
        return buttons
    for button in _buttons(buttons):
        if button.get("label") == "launch-buttons":
            button["tooltip"] = "Open the exercise edition (answers removed)"
        elif button.get("text") == "Binder" and binder:
            button["url"] = binder
            button["text"] = "Binder (exercise edition)"
            button["tooltip"] = "Open the exercise edition in Binder"
        elif button.get("label") in ("download-source-button", "download-notebook-button"):
            button["url"] = edition_url
            button["text"] = "exercise edition (.ipynb)"
            button["tooltip"] = "Download the exercise edition (.ipynb), to fill in and hand in"
    return buttons


def _lab_page_buttons(app, pagename, templatename, context, doctree) -> None:
    """After the theme made its header buttons (priority 501): fit them to the page."""
    buttons = context.get("header_buttons")
    if buttons is None:
        return
    lab = lab_of(pagename, Path(app.srcdir))
    edition = f"exercises/{lab}.ipynb"
    binder = None
    if lab is not None:
        target = Path(app.outdir) / edition  # served next to the pages, for the download button
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(Path(app.srcdir) / edition, target)
        try:
            binder = binder_url(app.config.html_theme_options, edition)
        except ValueError:
            binder = None
    fit_header_buttons(buttons, lab, context["pathto"](edition, 1) if lab else "", binder)


def _lab_page_note(app, doctree, docname) -> None:
    """At the top of a lab page: which notebook is which, and how to hand work in."""
    lab = lab_of(docname, Path(app.srcdir))
    sections = list(doctree.findall(nodes.section))
    if lab is None or not sections or app.builder.format != "html":
        return
    number = int(LAB_PAGE.fullmatch(docname).group(2))
    up = "" if app.builder.name == "singlehtml" else "../"  # lab pages live in labs/
    options = app.config.html_theme_options
    repo, branch = str(options.get("repository_url", "")).rstrip("/"), options.get("repository_branch", "main")

    def link(text, url):
        return nodes.reference(text, text, refuri=url, internal=False)

    first = nodes.paragraph()
    first += [nodes.strong(text="To do this lab yourself, "),
              nodes.Text("use the launch (rocket) or download button at the top of the page: both give "
                         "the exercise edition, "),
              nodes.literal(text=f"exercises/{lab}.ipynb"),
              nodes.Text(", with the answers removed. On your own computer, "),
              nodes.literal(text=f"./course lab {number}"),
              nodes.Text(" opens it in JupyterLab.")]
    second = nodes.paragraph()
    second += [nodes.strong(text="To hand it in, "),
               nodes.Text("save the notebook (File → Save, then download the .ipynb file) and give that file "
                          "to your teacher. Teachers: see "),
               link("setting and grading a lab", app.builder.get_relative_uri(docname, TEACHING_PAGE)),
               nodes.Text(".")]
    third = nodes.paragraph()
    third += [nodes.strong(text="For self-study, "),
              nodes.Text("this page is the worked lab: the solutions are folded under each exercise. "
                         "Download the worked lab: "),
              link(f"{lab}.ipynb", f"{up}_sources/labs/{lab}.ipynb")]
    if repo.startswith("https://github.com/"):
        third += [nodes.Text(" (or "), link("see it on GitHub", f"{repo}/blob/{branch}/labs/{lab}.ipynb"),
                  nodes.Text(")")]
    third += nodes.Text(".")
    note = nodes.admonition(classes=["tip", "lab-edition-note"])
    note += nodes.title(text="Exercise edition and worked lab")
    note += [first, second, third]
    section = sections[0]
    title_at = next((i for i, child in enumerate(section.children) if isinstance(child, nodes.title)), -1)
    section.insert(title_at + 1, note)


def _encrypt_kernel_transport(app, config) -> None:
    """The chapters' kernels get CurveZMQ keys (see :func:`tinylm_course.execute.encrypt_kernel_transport`)."""
    from .execute import encrypt_kernel_transport

    encrypt_kernel_transport()


KEY_TERMS = "## Key terms"
"""The heading of the table of terms that ends every chapter."""


def key_terms(chapter: Path) -> list[tuple[str, str]]:
    """The (English, Chinese) rows of a chapter's key-terms table; [] if it has none."""
    text = Path(chapter).read_text(encoding="utf-8")
    if KEY_TERMS not in text:
        return []
    section = text.split(KEY_TERMS, 1)[1].split("\n#", 1)[0]
    cells = [[c.strip() for c in line.strip().strip("|").split("|")]
             for line in section.splitlines() if line.strip().startswith("|")]
    rows = [(row[0], row[1]) for row in cells[2:] if len(row) >= 2]  # after the header and |---|---|
    return rows


def book_chapters(root: Path) -> list[str]:
    """The chapter files (``chapters/NAME``) in the order of ``_toc.yml``."""
    toc = (Path(root) / "_toc.yml").read_text(encoding="utf-8")
    return re.findall(r"file:\s*(chapters/\w+)", toc)


def glossary(root: Path) -> dict[str, tuple[str, str]]:
    """Each English term -> (its Chinese name, the first chapter that lists it), in book order."""
    terms: dict[str, tuple[str, str]] = {}
    for chapter in book_chapters(root):
        for english, chinese in key_terms(Path(root) / f"{chapter}.md"):
            terms.setdefault(english, (chinese, chapter))
    return terms


def glossary_markdown(root: Path | None = None) -> str:
    """The glossary as a MyST table: term, 中文, and a link to the chapter that introduces it."""
    from tinylm.paths import course_root

    terms = glossary(root or course_root())
    lines = ["| English | 中文 | introduced in |", "|---|---|---|"]
    for english in sorted(terms, key=str.lower):
        chinese, chapter = terms[english]
        lines.append(f"| {english} | {chinese} | {{doc}}`{chapter.removeprefix('chapters/')}` |")
    return "\n".join(lines)


LADDER_CORPUS = "shakespeare"
"""The corpus whose test split the ladder page ranks (rungs on other corpora are left out)."""


def ladder_rungs(rungs=None) -> list:
    """The rungs the ladder page shows, in its table and in its figure alike: the ladder's rungs on
    :data:`LADDER_CORPUS`, best test bpc first."""
    from tinylm.evaluation import ladder

    rungs = ladder.load() if rungs is None else rungs
    return sorted((r for r in rungs if r.corpus == LADDER_CORPUS), key=lambda r: r.test_bpc)


def _seconds(rung) -> str:
    """A rung's training CPU-seconds; the LLM's is an estimate (it was trained elsewhere)."""
    value = rung.train_cpu_seconds
    if rung.stage == "LLM":
        return f"about {value / 1e9:,.0f} billion (estimated)"
    return f"{value:,.1f}" if value < 10 else f"{value:,.0f}"


def ladder_markdown(rungs) -> str:
    """The ladder page's table (MyST): one row per rung, in the order given, with a link to its lab."""
    lines = ["| rung | stage | test bits per character | parameters | training CPU-seconds | lab |",
             "|---|---|--:|--:|--:|---|"]
    for r in rungs:
        parameters = f"{r.parameters:,}" if r.parameters else "none"
        lines.append(f"| {r.name} | {r.stage} | {r.test_bpc:.3f} | {parameters} | {_seconds(r)} "
                     f"| {{doc}}`Lab\u00a0{int(r.lab[3:5])} <../labs/{r.lab}>` |")  # no break in "Lab 15"
    return "\n".join(lines)


def _drop_repeated_scripts(app, pagename, templatename, context, doctree) -> None:
    """Keep the first of identical ``<script>`` entries of a page (same file or body, same attributes)."""
    scripts, seen, unique = context.get("script_files") or [], set(), []
    for script in scripts:
        key = (getattr(script, "filename", script) or "", getattr(script, "priority", None),
               tuple(sorted((getattr(script, "attributes", None) or {}).items())))  # None and "" alike
        if key not in seen:
            seen.add(key)
            unique.append(script)
    scripts[:] = unique


def _html_handlers_for_singlehtml(app) -> None:
    """Let the one-page build (``singlehtml``, which ``./course pdf`` prints) draw every node the
    html build draws.

    Sphinx looks up an extension's node handlers by the builder's name, and falls back to its
    format (``html``) only when no extension registered any for that name.  sphinx-exercise
    registers its nodes for ``singlehtml`` too, so the fallback is lost and myst-nb's folded
    cells (registered for ``html`` only) stop the build; give ``singlehtml`` the missing ones.
    """
    handlers = app.registry.translation_handlers
    name, fmt = app.builder.name, app.builder.format
    if name != fmt and name in handlers:
        for node, pair in handlers.get(fmt, {}).items():
            handlers[name].setdefault(node, pair)


def _use_local_mathjax(app, config) -> None:
    mathjax_source()  # fail early, with the install command, if it is missing
    config.mathjax_path = f"mathjax/{MATHJAX_ENTRY}"


def _copy_mathjax(app, exception) -> None:
    if exception is None and app.builder.format == "html":
        copy_mathjax(Path(app.outdir))


def setup(app):
    app.connect("config-inited", _use_local_mathjax, priority=900)
    app.connect("config-inited", _encrypt_kernel_transport)
    app.connect("builder-inited", _html_handlers_for_singlehtml)
    app.connect("html-page-context", _lab_page_buttons, priority=900)  # after the theme's (501)
    app.connect("doctree-resolved", _lab_page_note)
    app.connect("build-finished", _copy_mathjax)
    app.connect("html-page-context", _drop_repeated_scripts, priority=1000)  # after those that add scripts
    app.add_role("exercise-binder", exercise_binder_role)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
