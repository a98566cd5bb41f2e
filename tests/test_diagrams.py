"""The diagram helpers the chapters draw their conceptual pictures with."""

import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402

from tinylm_course.diagrams import Box, diagram, pipeline  # noqa: E402


def test_pipeline_draws_one_box_a_step_and_one_arrow_between_steps():
    fig = pipeline(["text", "tokens", "model"], labels=["split", "embed"])
    ax = fig.axes[0]
    boxes = [p for p in ax.patches if type(p).__name__ == "FancyBboxPatch"]
    arrows = [p for p in ax.patches if type(p).__name__ == "FancyArrowPatch"]
    assert len(boxes) == 3 and len(arrows) == 2
    assert {t.get_text() for t in ax.texts} == {"text", "tokens", "model", "split", "embed"}


def test_an_arrow_to_an_unknown_box_is_refused_by_name():
    with pytest.raises(KeyError, match="no box named 'kee'"):
        diagram({"q": Box(0, 0, "Q"), "k": Box(2, 0, "K")}, [("q", "kee")])


def test_chinese_labels_get_the_cjk_font_and_later_figures_keep_the_defaults():
    before = list(matplotlib.rcParams["font.family"])
    fig = diagram({"a": Box(0, 0, "语言模型")}, [])
    label = next(t for t in fig.axes[0].texts if t.get_text() == "语言模型")
    assert any("CJK" in name for name in label.get_fontfamily())
    assert list(matplotlib.rcParams["font.family"]) == before


def test_an_empty_pipeline_is_an_error():
    with pytest.raises(ValueError):
        pipeline([])
