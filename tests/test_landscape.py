"""The LLM landscape table (tinylm.analysis.landscape): every row sourced, nothing undisclosed
filled in."""

import math
import re
from pathlib import Path

import pytest

from tinylm.analysis import landscape, params

ROOT = Path(__file__).resolve().parents[1]
BIB_KEYS = set(re.findall(r"^@\w+\{([^,]+),", (ROOT / "references.bib").read_text(encoding="utf-8"), re.M))

# The shapes of GPT-1's released weights (openai/finetune-transformer-lm, model/params_shapes.json):
# two embeddings, then twelve identical layers.
GPT1_EMBEDDINGS = [(512, 768), (40478, 768)]
GPT1_LAYER = [(1, 768, 2304), (2304,), (1, 768, 768), (768,), (768,), (768,), (1, 768, 3072), (3072,),
              (1, 3072, 768), (768,), (768,), (768,)]


def test_every_row_cites_sources_that_are_in_the_bibliography():
    assert landscape.cite_keys() <= BIB_KEYS, landscape.cite_keys() - BIB_KEYS


def test_every_cell_is_filled():
    for row in landscape.LANDSCAPE:
        for field in ("name", "organisation", "parameters", "training_tokens", "context", "open_weights"):
            assert getattr(row, field).strip(), f"{row.name}: {field} is empty"


@pytest.mark.parametrize("name", ["GPT-3.5 / ChatGPT", "GPT-4", "文心一言 ERNIE Bot"])
def test_undisclosed_sizes_stay_undisclosed(name):
    row = next(r for r in landscape.LANDSCAPE if r.name == name)
    assert row.parameters == landscape.NOT_DISCLOSED and row.training_tokens == landscape.NOT_DISCLOSED


def test_the_models_the_brief_names_are_all_there():
    names = " ".join(r.name for r in landscape.LANDSCAPE)
    for wanted in ("GPT-1", "GPT-2", "GPT-3", "GPT-3.5", "GPT-4", "InstructGPT", "PaLM", "LLaMA", "Llama 2",
                   "Llama 3", "GLM-130B", "ChatGLM", "Qwen", "DeepSeek-V3", "DeepSeek-R1", "ERNIE", "文心一言",
                   "盘古", "Yi"):
        assert wanted in names, wanted


def test_gpt1_size_is_the_count_of_its_released_weights():
    released = sum(math.prod(s) for s in GPT1_EMBEDDINGS) + 12 * sum(math.prod(s) for s in GPT1_LAYER)
    assert params.num_parameters(params.PUBLISHED["gpt-1"].config) == released == 116_534_784
    assert next(r for r in landscape.LANDSCAPE if r.name == "GPT-1").parameters == "117M"


def test_a_row_without_a_source_is_refused():
    with pytest.raises(ValueError, match="source"):
        landscape.LLM("X", "Y", 2023, "1B", "1T", "2,048", "yes", ())


def _short(x: float) -> str:
    """175e9 -> '175B', 1.4e12 -> '1.4T', as the table writes sizes."""
    for unit, scale in (("T", 1e12), ("B", 1e9)):
        if x >= scale:
            return f"{x / scale:g}{unit}"
    raise ValueError(x)


def test_the_numbers_for_6nd_are_the_ones_the_row_shows():
    rows = [r for r in landscape.LANDSCAPE if r.n is not None]
    assert len(rows) >= 6
    for row in rows:
        assert _short(row.n) in row.parameters, (row.name, _short(row.n), row.parameters)
        d = _short(row.d)
        assert d in row.training_tokens or d.replace("T", ".0T") in row.training_tokens, (row.name, d)
        assert row.training_flops == 6 * row.n * row.d
    gpt3 = next(r for r in rows if r.name == "GPT-3")
    assert abs(gpt3.training_flops / 3.14e23 - 1) < 0.01   # Brown et al.'s own count, Table D.1


def test_half_a_pair_for_6nd_is_refused():
    with pytest.raises(ValueError, match="both n and d"):
        landscape.LLM("X", "Y", 2023, "1B", "1T", "2,048", "yes", ("brown2020",), n=1e9)
