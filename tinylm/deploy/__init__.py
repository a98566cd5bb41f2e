"""Making models small and serving them: what it takes to run a language model well on a laptop.

Fine-tune a few parameters instead of all of them; store the weights in fewer bits; serve many
requests at once without wasting the memory their keys and values need; and know what a token
costs.  Each module is measured on SmolLM2-135M-Instruct (:mod:`tinylm.pretrained.smollm2`) and
checked against the library people use next (peft, gguf, the openai client).

- :mod:`~tinylm.deploy.lora`     low-rank adaptation (LoRA) of any linear layer: rank, alpha,
  dropout, target modules by name, merge and unmerge; checked against peft
- :mod:`~tinylm.deploy.quantise` block quantisation (Q8_0, Q4_0, Q4_1, as GGUF defines them),
  int8 per channel and naive int4 per tensor; a model's weights quantised and its cost measured
- :mod:`~tinylm.deploy.paging`   the key/value cache in fixed-size blocks (a block table per
  sequence, copy-on-write for shared prefixes) and the memory that contiguous reservation wastes
- :mod:`~tinylm.deploy.batching` continuous batching: requests join the running batch at the next
  token, each with its own key/value cache, and leave when they finish
- :mod:`~tinylm.deploy.server`   an OpenAI-compatible HTTP server (FastAPI + uvicorn) on the
  batching engine: ``python -m tinylm serve``; its load test
- :mod:`~tinylm.deploy.cost`     FLOPs and bytes per generated token, prefill against decode, the
  memory bandwidth of this machine and its roofline
"""
