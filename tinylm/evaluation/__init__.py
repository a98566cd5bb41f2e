"""Measuring models: bits per character, compressors, scores of answers, and the ladder.

- :mod:`tinylm.evaluation.metrics`  bits per character, perplexity, compressor baselines, mixtures, answer scores
- :mod:`tinylm.evaluation.answers`  exact match against partial credit (token accuracy, edit distance, cross-entropy), teacher-forced scores
- :mod:`tinylm.evaluation.ladder`   the course-wide table of models scored on the same test split
- :mod:`tinylm.evaluation.long_scores`  a whole split scored by a large model: a committed run
"""
