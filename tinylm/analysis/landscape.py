"""The large language models a reader will hear about, with what their makers published.

One row per model (or family): who made it, when it was first described, how many parameters,
how many training tokens, how long a context, and whether its weights can be downloaded.
Every figure comes from the paper, technical report or release note named in ``cite`` (BibTeX
keys of ``references.bib``), and two words stand for the figures that are missing:

:data:`NOT_DISCLOSED`
    the makers never published the figure (GPT-4's size, for example).  Figures that circulate
    without a source (rumours, leaks, estimates by others) are not used.
:data:`NOT_FOUND`
    the makers may have published it, but the course could not check it against the source,
    so it is left out rather than guessed.

Sizes are written as their makers write them ("175B" is 175 billion, "1.4T" 1.4 trillion, "128K"
about 128 thousand tokens).  A mixture-of-experts model has two sizes: all its parameters, and
the parameters *active* for each token, which set the compute per token.
"""

from __future__ import annotations

from dataclasses import dataclass

from .compute import training_flops
from .params import PUBLISHED, num_parameters

NOT_DISCLOSED = "not disclosed"
NOT_FOUND = "—"


@dataclass(frozen=True)
class LLM:
    """One model or family, with the figures its makers published."""

    name: str
    organisation: str
    year: int                 # of the first public description (paper, report or release)
    parameters: str
    training_tokens: str
    context: str              # tokens the model reads at once
    open_weights: str         # can anyone download the weights, and on what terms
    cite: tuple[str, ...]     # BibTeX keys for the figures
    note: str = ""            # what the row leaves out or how a figure was obtained
    n: float | None = None    # for 6ND: parameters of the largest model (active ones for MoE) ...
    d: float | None = None    # ... and the tokens it was trained on, when both are published

    def __post_init__(self):
        if not self.cite:
            raise ValueError(f"{self.name}: every row needs a source")
        if not 2017 <= self.year <= 2030:
            raise ValueError(f"{self.name}: year {self.year} is not plausible")
        if (self.n is None) != (self.d is None):
            raise ValueError(f"{self.name}: give both n and d for 6ND, or neither")

    @property
    def training_flops(self) -> float | None:
        """6ND for the largest model of the row, or None where N or D was not published."""
        return None if self.n is None else training_flops(self.n, self.d)


# GPT-1's paper states no total; its released weights (openai/finetune-transformer-lm,
# model/params_shapes.json) hold exactly the count of its configuration.
_GPT1 = f"{num_parameters(PUBLISHED['gpt-1'].config) / 1e6:.0f}M"

LANDSCAPE: tuple[LLM, ...] = (
    LLM("GPT-1", "OpenAI", 2018, _GPT1, f"{NOT_DISCLOSED} (BooksCorpus, over 7,000 books)", "512", "yes",
        ("radford2018", "openai2018finetune"),
        "parameters counted from its configuration"),
    LLM("GPT-2", "OpenAI", 2019, "1.5B (largest of four)", f"{NOT_DISCLOSED} (WebText, 40 GB)", "1,024",
        "yes (the 1.5B in November 2019)", ("radford2019", "openai2019gpt2")),
    LLM("GPT-3", "OpenAI", 2020, "175B", "300B", "2,048", "no (API only)", ("brown2020",), n=175e9, d=300e9),
    LLM("InstructGPT", "OpenAI", 2022, "1.3B, 6B, 175B",
        "GPT-3's, then about 13k prompts with demonstrations and 33k with ranked answers", "as GPT-3", "no",
        ("ouyang2022",), "GPT-3 models fine-tuned on instructions and human preferences"),
    LLM("GPT-3.5 / ChatGPT", "OpenAI", 2022, NOT_DISCLOSED, NOT_DISCLOSED, NOT_DISCLOSED, "no",
        ("openai2022chatgpt",), "fine-tuned from a GPT-3.5 model, like InstructGPT"),
    LLM("GPT-4", "OpenAI", 2023, NOT_DISCLOSED, NOT_DISCLOSED, "8K; 32K", "no",
        ("openai2023gpt4", "openai2023gpt4models"), "its report withholds size, data and compute"),
    LLM("PaLM", "Google", 2022, "540B", "780B", "2,048", "no", ("chowdhery2023",), n=540e9, d=780e9),
    LLM("LLaMA", "Meta", 2023, "7B, 13B, 33B, 65B", "1.0T (7B, 13B); 1.4T (33B, 65B)", "2,048",
        "to researchers, on request", ("touvron2023",), n=65e9, d=1.4e12),
    LLM("Llama 2", "Meta", 2023, "7B, 13B, 70B", "2.0T", "4,096", "yes (Llama 2 licence)",
        ("touvron2023llama2",), n=70e9, d=2.0e12),
    LLM("Llama 3 (3.1)", "Meta", 2024, "8B, 70B, 405B", "15.6T (405B)", "128K", "yes (Llama 3.1 licence)",
        ("dubey2024",), n=405e9, d=15.6e12),
    LLM("GLM-130B", "Tsinghua University, Zhipu AI", 2022, "130B", "400B (Chinese and English)", "2,048", "yes",
        ("zeng2023glm",), n=130e9, d=400e9),
    LLM("ChatGLM-6B", "Tsinghua University, Zhipu AI", 2023, "6.2B", "about 1T (Chinese and English)", "2,048",
        "yes", ("thudm2023chatglm",)),
    LLM("Qwen (通义千问)", "Alibaba", 2023, "1.8B, 7B, 14B", "2.2T to 3.0T", "2,048", "yes", ("bai2023qwen",)),
    LLM("DeepSeek-V3", "DeepSeek", 2024, "671B total, 37B active (MoE)", "14.8T", "128K", "yes",
        ("deepseekai2024v3",), n=37e9, d=14.8e12),
    LLM("DeepSeek-R1", "DeepSeek", 2025, "671B total, 37B active (MoE)", "DeepSeek-V3's, then reinforcement learning",
        "128K", "yes (MIT licence)", ("deepseekai2025r1", "deepseekai2024v3")),
    LLM("ERNIE 3.0 Titan (文心)", "Baidu, Peng Cheng Laboratory", 2021, "260B", NOT_FOUND, NOT_FOUND, "no",
        ("wang2021ernietitan",)),
    LLM("文心一言 ERNIE Bot", "Baidu", 2023, NOT_DISCLOSED, NOT_DISCLOSED, NOT_DISCLOSED, "no",
        ("baidu2023erniebot",), "a chat product; Baidu published no technical report with it"),
    LLM("盘古α PanGu-α", "Peng Cheng Laboratory, Huawei", 2021, "200B (also 2.6B, 13B)",
        f"{NOT_FOUND} (1.1 TB of Chinese text)", "1,024", "partly (2.6B and 13B)", ("zeng2021pangu", "pcl2021pangu")),
    LLM("Yi", "01.AI", 2023, "6B, 34B", "3.1T (English and Chinese)", "4K (200K variants)", "yes", ("young2024yi",),
        n=34e9, d=3.1e12),
)
"""The table of the chapter on large language models, in the order it is shown."""


def cite_keys(rows: tuple[LLM, ...] = LANDSCAPE) -> set[str]:
    """Every BibTeX key the rows cite."""
    return {key for row in rows for key in row.cite}
