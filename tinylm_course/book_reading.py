"""The book's Sphinx extension for readers: Chinese search and the language of Chinese text.

Listed in ``sphinx.extra_extensions`` of ``_config.yml`` (the layout, the drawers on phones and
what must never be clipped are in ``_static/tinylm.css`` and ``_static/tinylm.js``).

- **Search in Chinese and English.** ``html_search_language: zh`` in ``_config.yml`` makes
  Sphinx cut Chinese text into words with ``jieba`` (cut for search: 掩码语言模型 is indexed as
  掩码, 语言, 模型 and the longer words jieba knows) and stem English words with the Porter
  stemmer, as the English search does. Without it a run of Chinese characters is one "word"
  and searching 模型 finds nothing. Sphinx 7's Chinese indexer remembers every Latin word of the
  book in a list and searches that list once per word: here it is a set (same result, linear
  time). jieba's log messages ("Building prefix dict ...") are silenced.
- **lang="zh-Hans" on Chinese summaries.** A chapter's 本章小结 is written in a
  ``{container} zh-summary``; its ``<div>`` gets ``lang="zh-Hans"`` (through docutils' own
  ``language-`` class convention), so screen readers read it in Chinese and browsers pick
  Chinese fonts and line breaking.
- **The bibliography as a list screen readers accept.** docutils writes a run of citations as
  ``<div role="list">`` holding ``<div role="doc-biblioentry">``: a role that DPUB-ARIA has
  deprecated, so a list without list items, which axe-core reports as a critical violation
  (aria-required-children). Each citation is written with ``role="listitem"`` instead.
"""

from __future__ import annotations

import logging

from docutils import nodes
from sphinx.search.zh import SearchChinese
from sphinx.transforms.post_transforms import SphinxPostTransform

ZH_SUMMARY_CLASS = "zh-summary"
ZH_LANG = "zh-Hans"


class SearchChineseAndEnglish(SearchChinese):
    """Sphinx's Chinese search (jieba for Chinese, Porter stemming for English), with the
    Latin words it has seen kept in a set instead of a list searched for every word."""

    def init(self, options: dict[str, str]) -> None:
        super().init(options)
        self.latin_terms = set()  # an instance attribute: the class's list is shared and grows forever

    def split(self, input: str) -> list[str]:  # noqa: A002 - the signature of the base class
        import jieba

        chinese = list(jieba.cut_for_search(input))
        latin = [term.strip() for term in self.latin1_letters.findall(input)]
        self.latin_terms.update(latin)
        return chinese + latin


class ChineseSummaryLanguage(SphinxPostTransform):
    """Mark ``{container} zh-summary`` as Chinese: HTML writers turn the class
    ``language-zh-Hans`` into the attribute ``lang="zh-Hans"``."""

    default_priority = 400
    formats = ("html",)

    def run(self, **kwargs) -> None:
        for node in self.document.findall(nodes.container):
            if ZH_SUMMARY_CLASS in node["classes"] and f"language-{ZH_LANG}" not in node["classes"]:
                node["classes"].append(f"language-{ZH_LANG}")


def _visit_citation(self, node) -> None:
    start = len(self.body)
    type(self).visit_citation(self, node)  # the translator's own method: only the role changes
    self.body[start:] = [part.replace('role="doc-biblioentry"', 'role="listitem"') for part in self.body[start:]]


def _depart_citation(self, node) -> None:
    type(self).depart_citation(self, node)


def _quiet_jieba(app, config) -> None:
    if config.html_search_language == "zh":
        import jieba

        jieba.setLogLevel(logging.WARNING)


def setup(app):
    app.add_search_language(SearchChineseAndEnglish)
    app.add_post_transform(ChineseSummaryLanguage)
    app.add_node(nodes.citation, override=True, html=(_visit_citation, _depart_citation))
    app.connect("config-inited", _quiet_jieba)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
