"""tinylm: the tested reference code behind the course.

One concept per module, written to be read:

- ``tinylm.data``      corpora loaded offline, with the course-wide train/validation/test split
- ``tinylm.ngram``     n-gram language models (add-k, interpolation, Kneser-Ney)
- ``tinylm.segment``   Chinese word segmentation with a unigram language model
- ``tinylm.metrics``   bits per character, perplexity, compressor baselines
- ``tinylm.ladder``    the course-wide table of models scored on the same test split
- ``tinylm.results``   small result files that labs write and chapters read
- ``tinylm.exercises`` the exercise edition of a lab
- ``tinylm.grading``   grading a student's lab with nbval
"""

__version__ = "0.1.0"
