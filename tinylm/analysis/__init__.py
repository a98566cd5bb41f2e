"""Looking inside models and measuring their cost.

- :mod:`tinylm.analysis.params`      counting the parameters of GPT-2, BERT, T5 and LLaMA from their configurations
- :mod:`tinylm.analysis.embeddings`  cosine similarity, nearest neighbours, PCA
- :mod:`tinylm.analysis.plots`       Chinese text in figures, attention maps
- :mod:`tinylm.analysis.speed`       our GPT's training step against others, and the KV cache
- :mod:`tinylm.analysis.compute`     training FLOPs (6ND), accelerator-hours, energy and CO2e of a run
- :mod:`tinylm.analysis.landscape`   the LLM landscape: published sizes, data, context, open weights
"""
