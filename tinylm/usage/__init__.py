"""Using large language models well and safely: what to measure before a model meets its users.

Each module is one study, measured on the course's own small models and on SmolLM2-135M-Instruct
(:mod:`tinylm.pretrained.smollm2`).  A study too long for a lab is run once by
``python -m tinylm study NAME`` (one thread, seeded), which writes ``results/study-NAME.json`` (and,
for a study that trains, checkpoints under ``checkpoints/study/NAME/``); its lab evaluates what the
run wrote and repeats a slice of it live.

- :mod:`~tinylm.usage.decoding`     greedy, beam search, temperature, top-k, top-p and the
  repetition penalty compared: diversity (distinct-n, repetition) against quality
- :mod:`~tinylm.usage.prompting`    zero-shot against few-shot: labelled tasks with exact answers in
  English and Chinese, the number and order of the examples, the chat template and system prompt
- :mod:`~tinylm.usage.reviews_en`   short English reviews labelled by sentiment, written for the
  prompting study (the Chinese ones are :mod:`tinylm.data.reviews`)
- :mod:`~tinylm.usage.scratchpad`   chain-of-thought: a model trained to answer directly against one
  trained to write its working first, at equal compute; chain-of-thought prompting on SmolLM2
- :mod:`~tinylm.usage.calibration`  hallucination and calibration: questions with and without an
  answer, confidence against accuracy, the expected calibration error, abstaining
- :mod:`~tinylm.usage.capitals`     its questions: capitals of 65 countries (English and Chinese)
  and invented countries, checked not to be real, that have no capital to name
- :mod:`~tinylm.usage.attacks`      prompt injection and jailbreak-style role play against a system
  rule; defences and what each costs in refused honest requests
- :mod:`~tinylm.usage.fairness`     a WEAT-style association test on sentence embeddings
- :mod:`~tinylm.usage.memorisation` a planted secret (a canary) and how easily it is extracted as
  training goes on
- :mod:`~tinylm.usage.studies`      the registry of studies that ``python -m tinylm study`` runs
"""
