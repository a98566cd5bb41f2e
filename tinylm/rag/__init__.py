"""Retrieval-augmented generation: answering from a corpus, not from memory alone.

The pipeline, one module a step: the corpus is cut into chunks, the chunks are embedded and
indexed, a question retrieves the best chunks (by words, by meaning, or both fused), and a language
model answers with them in its prompt, citing them.  The corpus is the book itself, frozen by
``python -m tinylm study rag-book``; the questions about it are labelled with the passage that
answers them, so every step can be measured.

- :mod:`~tinylm.rag.corpus`     the book's chapters as plain text, frozen, and cut into chunks
- :mod:`~tinylm.rag.questions`  questions about the book, each with its evidence; dev/test split;
  the scoring rule for generated answers
- :mod:`~tinylm.rag.retrieval`  BM25, dense retrieval with sentence embeddings, reciprocal rank
  fusion; recall@k and the mean reciprocal rank
- :mod:`~tinylm.rag.fusion`     RAG-Fusion: a language model rewrites the question several ways and
  the rankings of the rewrites are fused; the retrieval study behind ``results/rag.json``
- :mod:`~tinylm.rag.index`      vector indexes: exact search by brute force in NumPy, and faiss's
  flat, HNSW, IVF and product-quantised indexes; recall against latency and build time at scale
- :mod:`~tinylm.rag.generation` the prompt with retrieved chunks, answers with and without them,
  citations by chunk
"""
