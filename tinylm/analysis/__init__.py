"""Looking inside models and measuring their cost.

- :mod:`tinylm.analysis.params`      counting the parameters of GPT-2, BERT, T5 and LLaMA from their configurations
- :mod:`tinylm.analysis.embeddings`  cosine similarity, nearest neighbours, PCA
- :mod:`tinylm.analysis.plots`       Chinese text in figures, attention maps
- :mod:`tinylm.analysis.speed`       our GPT's training step against others, and the KV cache
"""
