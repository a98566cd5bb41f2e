"""A whole split scored in pieces (tinylm.evaluation.long_scores): the pieces add up to the text."""

from __future__ import annotations

import numpy as np
import pytest

import tinylm
from tinylm import results
from tinylm.evaluation import long_scores
from tinylm.evaluation.metrics import scored_chars
from tinylm.models import NGramModel
from tinylm.tokenizers import CharTokenizer

TEXT = "the cat sat on the mat; the dog sat on the log. " * 40


def test_pieces_cover_the_text_in_order():
    spans = long_scores.pieces(TEXT, 300)
    assert spans[0][0] == 0 and spans[-1][1] == len(TEXT)
    assert all(a2 == b1 for (_, b1), (a2, _) in zip(spans, spans[1:]))


def test_with_one_token_of_past_a_bigram_scores_the_pieces_as_the_whole_text():
    """Each piece gets the token before it as context, so for a bigram (which needs no more) the
    pieces' bits and characters add up exactly to the whole text's."""
    tokenizer = CharTokenizer(sorted(set(TEXT)))
    ids = np.asarray(tokenizer.encode(TEXT))
    model = NGramModel(2, len(tokenizer), "kneser-ney").fit(ids)
    done = [long_scores.score_piece(model, tokenizer, TEXT, span, context=64, stride=48)
            for span in long_scores.pieces(TEXT, 300)]
    whole = tinylm.score(model, ids)
    assert sum(p["chars"] for p in done) == scored_chars(tokenizer, ids) == len(TEXT) - 1
    assert sum(p["tokens"] for p in done) == len(ids)                # each piece's own tokens
    assert sum(p["bits"] for p in done) == pytest.approx(-whole.sum(), abs=0.01)
    assert long_scores.bpc({"pieces": done}) == pytest.approx(-whole.sum() / (len(TEXT) - 1), abs=1e-5)


def test_an_unknown_model_is_refused_by_name():
    with pytest.raises(ValueError, match="no scoring settings"):
        long_scores.run("gpt-5")


def test_the_committed_llm_run_covers_the_whole_test_split_with_its_settings():
    run = long_scores.load("smollm2-135m-instruct")
    settings = long_scores.SETTINGS["smollm2-135m-instruct"]
    test = tinylm.data.shakespeare().test
    assert (run["context"], run["stride"], run["split"], run["limit"]) == (settings["context"], settings["stride"], "test", None)
    assert [(p["start"], p["end"]) for p in run["pieces"]] == long_scores.pieces(test, run["piece_chars"])
    assert sum(p["chars"] for p in run["pieces"]) == run["chars"]
    assert run["bpc"] == pytest.approx(long_scores.bpc(run), abs=1e-4)
    assert run["code"]["commit"] and not run["code"].get("dirty"), "the run was made from committed code"
    assert run["cpu_seconds"] <= 30 * 60, "a committed run takes at most 30 CPU-minutes"
    rung = {r.name: r for r in tinylm.evaluation.ladder.load()}["SmolLM2-135M-Instruct"]
    assert rung.stage == "LLM" and rung.test_bpc == round(run["bpc"], 4)
