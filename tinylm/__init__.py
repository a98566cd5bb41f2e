"""tinylm: the tested reference code behind the course.

One concept per module, written to be read:

- ``tinylm.data``      corpora loaded offline, with the course-wide train/validation/test split
- ``tinylm.ngram``     n-gram language models (add-k, interpolation, Kneser-Ney)
- ``tinylm.segment``   Chinese word segmentation with a unigram language model
- ``tinylm.params``    counting the parameters of GPT-2, BERT, T5 and LLaMA from their configurations
- ``tinylm.autograd``  a small reverse-mode automatic differentiation engine on numpy arrays
- ``tinylm.bpe``       byte-pair encoding from scratch, and SmolLM2's tokeniser read from its GGUF file
- ``tinylm.train``     the training loop every neural model uses, and evaluation in bits per character
- ``tinylm.mlp_lm``    Bengio's MLP language model
- ``tinylm.word2vec``  skip-gram and CBOW with negative sampling, PPMI + SVD
- ``tinylm.rnn``       recurrent language models: RNN, LSTM, GRU
- ``tinylm.rungs``     rung runs: training a ladder rung for longer than a lab may
- ``tinylm.metrics``   bits per character, perplexity, compressor baselines
- ``tinylm.ladder``    the course-wide table of models scored on the same test split
- ``tinylm.results``   small result files that labs write and chapters read
- ``tinylm.exercises`` the exercise edition of a lab
- ``tinylm.grading``   grading a student's lab with nbval
- ``tinylm.bench``     each lab's seconds and peak memory on one core
- ``tinylm.book``      the book's Sphinx extension and its glossary
"""

__version__ = "0.1.0"
