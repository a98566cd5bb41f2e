"""tinylm: the tested reference code behind the course.

One concept per module, written to be read:

- ``tinylm.data``      corpora loaded offline, with the course-wide train/validation/test split
- ``tinylm.vocab``     a vocabulary: symbols to ids and back
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
- ``tinylm.transformer`` one Transformer, three families: encoder, decoder (with a KV cache), encoder-decoder
- ``tinylm.mlm``       masked-language-model pre-training (BERT) and fine-tuning a classifier
- ``tinylm.seq2seq``   text-to-text tasks (Chinese numerals), span corruption, training an encoder-decoder
- ``tinylm.pretrained`` all-MiniLM-L6-v2's weights loaded into our encoder
- ``tinylm.speed``     our GPT's training step timed against nanoGPT-style and transformers GPTs; the KV cache
- ``tinylm.plots``     Chinese text in figures, and attention maps
- ``tinylm.metrics``   bits per character, perplexity, compressor baselines
- ``tinylm.ladder``    the course-wide table of models scored on the same test split
- ``tinylm.results``   small result files that labs write and chapters read
- ``tinylm.execute``   running a worked lab and saving it with its outputs
- ``tinylm.exercises`` the exercise edition of a lab
- ``tinylm.grading``   grading a student's lab with nbval
- ``tinylm.nbval_plugin`` nbval adapted to the labs: stderr not compared, timeouts and dead kernels reported
- ``tinylm.bench``     each lab's seconds and peak memory on one core
- ``tinylm.book``      the book's Sphinx extension and its glossary
"""

__version__ = "0.1.0"
