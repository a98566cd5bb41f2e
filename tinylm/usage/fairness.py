"""Bias (偏见) measured: the Word Embedding Association Test (WEAT, 词嵌入关联测试).

Caliskan et al. (2017) took the Implicit Association Test of psychology, which times how fast
people pair, say, flowers with pleasant words, and asked the same question of word vectors: are
the vectors of one set of **target** words (X: flowers) closer to one set of **attribute** words
(A: pleasant) than those of another target set (Y: insects) are?  For a word w,

    s(w, A, B) = mean_{a in A} cos(w, a) - mean_{b in B} cos(w, b)

is how much closer w is to A than to B (:func:`associations`).  The **effect size**
(:func:`effect_size`) compares the two target sets in units of the spread of s:

    d = (mean_{x in X} s(x, A, B) - mean_{y in Y} s(y, A, B)) / std_{w in X u Y} s(w, A, B),

with the sample standard deviation (n - 1 in the denominator, as in May et al.'s SEAT code).
Like Cohen's d it lies between about -2 and 2; 0.2 is called small, 0.8 large.  The test statistic
is S = sum_x s(x) - sum_y s(y) (:func:`statistic`), and the **permutation test**
(:func:`permutation_p`) asks how often a random split of X u Y into two sets of the same sizes
gives a statistic at least as large: the one-sided p-value.  When there are few splits
(C(16, 8) = 12,870 for two sets of 8) all are enumerated and p is exact; otherwise splits are
drawn at random with a seed and p is estimated as (1 + hits) / (1 + draws).  (Caliskan et al.
count splits with a *strictly* larger statistic and leave out the observed one; counting "at
least as large", the observed split included, is the usual convention and never gives p = 0.)

What the test can and cannot show.  A large d says the *vectors* put the two target sets at
different distances from the two attribute sets, for *these* words.  It does not say how a system
built on the vectors will treat people, and it is fragile: the word lists are small and chosen by
the experimenter, a different list can change d a lot, and for a sentence encoder the result
depends on whether words are embedded alone or in a template sentence (May et al., 2019, SEAT,
found many associations of word vectors do not carry over to sentence encoders; Ethayarajh et al.,
2019, show WEAT can be made to report a bias, or none, by the choice of words).  The
p-value treats the words as the random sample, which they are not.  Use it as a probe, not a
certificate.

:data:`TESTS` holds the word sets the course uses: three of Caliskan et al.'s English tests and
Chinese counterparts written for the course.  :func:`embed_words` embeds words with a sentence
encoder (:func:`tinylm.pretrained.minilm.sentence_encoder`), alone or in a template.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np

from ..analysis.embeddings import unit_rows

EXACT_LIMIT = 200_000
"""Enumerate every split of the targets when there are at most this many; otherwise sample."""

SAMPLES = 100_000
"""Random splits drawn when there are too many to enumerate."""


def _matrix(vectors, name: str) -> np.ndarray:
    M = np.asarray(vectors, dtype=np.float64)
    if M.ndim != 2 or len(M) == 0:
        raise ValueError(f"{name} must be a non-empty (n, d) array of vectors, got shape {M.shape}")
    return M


def associations(W, A, B) -> np.ndarray:
    """s(w, A, B) for every row w of ``W``: mean cosine with the rows of ``A`` minus mean cosine
    with the rows of ``B``."""
    W, A, B = _matrix(W, "W"), _matrix(A, "A"), _matrix(B, "B")
    if not W.shape[1] == A.shape[1] == B.shape[1]:
        raise ValueError(f"the vectors differ in dimension: {W.shape[1]}, {A.shape[1]}, {B.shape[1]}")
    W, A, B = unit_rows(W), unit_rows(A), unit_rows(B)
    return (W @ A.T).mean(axis=1) - (W @ B.T).mean(axis=1)


def effect_size(X, Y, A, B) -> float:
    """WEAT's effect size d (see the module docstring).

    Raises ``ValueError`` when every target word has the same association (d is then 0 / 0): the
    vectors cannot tell the target words apart."""
    sx, sy = associations(X, A, B), associations(Y, A, B)
    both = np.concatenate([sx, sy])
    if len(both) < 3:
        raise ValueError("the effect size needs at least three target words in all")
    spread = both.std(ddof=1)
    if spread <= 1e-12 * max(1.0, np.abs(both).max()):
        raise ValueError("every target word has the same association with A and B: their vectors cannot be told "
                         "apart (for MiniLM, Chinese words made only of [UNK] tokens); d is undefined")
    return float((sx.mean() - sy.mean()) / spread)


def statistic(X, Y, A, B) -> float:
    """The test statistic S = sum over X of s(x, A, B) minus sum over Y of s(y, A, B)."""
    return float(associations(X, A, B).sum() - associations(Y, A, B).sum())


@dataclass(frozen=True)
class PermutationTest:
    """A permutation test's result: the one-sided p-value, how many splits it looked at, and
    whether those were all of them (``exact``)."""

    p: float
    splits: int
    exact: bool


def split_count(n_x: int, n_y: int) -> int:
    """How many ways there are to split ``n_x + n_y`` words into sets of ``n_x`` and ``n_y``."""
    return math.comb(n_x + n_y, n_x)


def permutation_p(X, Y, A, B, exact_limit: int = EXACT_LIMIT, samples: int = SAMPLES,
                  seed: int = 0) -> PermutationTest:
    """One-sided permutation test of WEAT's statistic: the share of splits (X_i, Y_i) of X u Y,
    of the sizes of X and Y, with S(X_i, Y_i) >= S(X, Y).

    Exact (every split, the observed one included) when there are at most ``exact_limit``
    splits; otherwise ``samples`` random splits (numpy's generator seeded with ``seed``) and
    p = (1 + hits) / (1 + samples)."""
    return permutation_p_from(associations(X, A, B), associations(Y, A, B), exact_limit, samples, seed)


def permutation_p_from(sx, sy, exact_limit: int = EXACT_LIMIT, samples: int = SAMPLES,
                       seed: int = 0) -> PermutationTest:
    """:func:`permutation_p` from the associations s(x, A, B) of X and s(y, A, B) of Y."""
    sx, sy = np.asarray(sx, dtype=np.float64), np.asarray(sy, dtype=np.float64)
    if sx.ndim != 1 or sy.ndim != 1 or not len(sx) or not len(sy):
        raise ValueError("sx and sy must be non-empty lists of associations, one number per target word")
    s = np.concatenate([sx, sy])
    n, m = len(s), len(sx)
    # S(X_i, Y_i) = sum_{X_i} s - (total - sum_{X_i} s): it grows with the sum over X_i alone
    observed = sx.sum()
    tolerance = 1e-12 * max(1.0, np.abs(s).sum())            # a split equal to the observed one up to rounding
    total = split_count(m, n - m)
    if total <= exact_limit:
        hits = 0
        for chunk in _chunks(itertools.combinations(range(n), m), 65536):
            hits += int(np.count_nonzero(s[np.asarray(chunk)].sum(axis=1) >= observed - tolerance))
        return PermutationTest(p=hits / total, splits=total, exact=True)
    if samples < 1:
        raise ValueError(f"samples must be positive, got {samples}")
    rng = np.random.default_rng(seed)
    hits, done = 0, 0
    while done < samples:
        size = min(10_000, samples - done)
        order = rng.permuted(np.tile(np.arange(n), (size, 1)), axis=1)[:, :m]
        hits += int(np.count_nonzero(s[order].sum(axis=1) >= observed - tolerance))
        done += size
    return PermutationTest(p=(1 + hits) / (1 + samples), splits=samples, exact=False)


def _chunks(iterable, size: int):
    iterator = iter(iterable)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


def weat(X, Y, A, B, **permutation) -> dict:
    """Effect size, statistic and permutation p-value of one test, as plain numbers."""
    test = permutation_p(X, Y, A, B, **permutation)
    return {"effect_size": effect_size(X, Y, A, B), "statistic": statistic(X, Y, A, B), "p": test.p,
            "splits": test.splits, "exact": test.exact}


# --------------------------------------------------------------------------- word sets

@dataclass(frozen=True)
class WordSets:
    """One WEAT: two target sets (X, Y), two attribute sets (A, B), their names and language."""

    name: str
    language: str
    X: tuple[str, ...]
    Y: tuple[str, ...]
    A: tuple[str, ...]
    B: tuple[str, ...]
    names: tuple[str, str, str, str]
    source: str


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


TESTS = {t.name: t for t in [
    WordSets("flowers-insects", "en",
             _words("aster clover hyacinth marigold poppy azalea crocus iris orchid rose bluebell daffodil lilac "
                    "pansy tulip buttercup daisy lily peony violet carnation gladiola magnolia petunia zinnia"),
             _words("ant caterpillar flea locust spider bedbug centipede fly maggot tarantula bee cockroach gnat "
                    "mosquito termite beetle cricket hornet moth wasp blackfly dragonfly horsefly roach weevil"),
             _words("caress freedom health love peace cheer friend heaven loyal pleasure diamond gentle honest "
                    "lucky rainbow diploma gift honor miracle sunrise family happy laughter paradise vacation"),
             _words("abuse crash filth murder sickness accident death grief poison stink assault disaster hatred "
                    "pollute tragedy divorce jail poverty ugly cancer kill rotten vomit agony prison"),
             ("flowers", "insects", "pleasant", "unpleasant"), "Caliskan et al. (2017), WEAT 1"),
    WordSets("names-career-family", "en",
             _words("John Paul Mike Kevin Steve Greg Jeff Bill"),
             _words("Amy Joan Lisa Sarah Diana Kate Ann Donna"),
             _words("executive management professional corporation salary office business career"),
             _words("home parents children family cousins marriage wedding relatives"),
             ("male names", "female names", "career", "family"), "Caliskan et al. (2017), WEAT 6"),
    WordSets("terms-career-family", "en",
             _words("male man boy brother he him his son"),
             _words("female woman girl sister she her hers daughter"),
             _words("executive management professional corporation salary office business career"),
             _words("home parents children family cousins marriage wedding relatives"),
             ("male terms", "female terms", "career", "family"),
             "Caliskan et al. (2017): WEAT 6's attributes with WEAT 7's gender terms"),
    WordSets("math-arts", "en",
             _words("math algebra geometry calculus equations computation numbers addition"),
             _words("poetry art dance literature novel symphony drama sculpture"),
             _words("male man boy brother he him his son"),
             _words("female woman girl sister she her hers daughter"),
             ("math", "arts", "male terms", "female terms"), "Caliskan et al. (2017), WEAT 7"),
    WordSets("flowers-insects-zh", "zh",
             _words("玫瑰 牡丹 菊花 兰花 百合 荷花 桃花 茉莉"),
             _words("蚊子 苍蝇 蟑螂 跳蚤 蜘蛛 蚂蚁 虱子 臭虫"),
             _words("爱 自由 健康 和平 朋友 快乐 礼物 天堂"),
             _words("虐待 谋杀 疾病 死亡 毒药 灾难 监狱 呕吐"),
             ("花", "虫", "愉快", "不愉快"), "written for the course after WEAT 1"),
    WordSets("terms-career-family-zh", "zh",
             _words("男人 男孩 父亲 儿子 兄弟 丈夫 爷爷 他"),
             _words("女人 女孩 母亲 女儿 姐妹 妻子 奶奶 她"),
             _words("管理 专业 公司 工资 办公室 商业 事业 经理"),
             _words("家 父母 孩子 家庭 表亲 婚姻 婚礼 亲戚"),
             ("男性词", "女性词", "事业", "家庭"), "written for the course after WEAT 6 and 7"),
    WordSets("math-arts-zh", "zh",
             _words("数学 代数 几何 微积分 方程 计算 数字 加法"),
             _words("诗歌 艺术 舞蹈 文学 小说 交响乐 戏剧 雕塑"),
             _words("男人 男孩 父亲 儿子 兄弟 丈夫 爷爷 他"),
             _words("女人 女孩 母亲 女儿 姐妹 妻子 奶奶 她"),
             ("数学", "艺术", "男性词", "女性词"), "written for the course after WEAT 7"),
]}
"""The course's tests by name: Caliskan et al.'s word lists in English, and Chinese sets written for
the course (the Chinese gender words are kinship terms and pronouns rather than given names)."""


TEMPLATES = {"en": "This is {}.", "zh": "这是{}。"}
"""A SEAT-style template sentence per language (May et al., 2019, use several such "bleached"
templates); ``"{}"`` alone embeds the bare word."""


def embed_words(encoder, words, template: str = "{}") -> np.ndarray:
    """The sentence embeddings of ``words``, each put into ``template`` first (float64, unit rows)."""
    if "{}" not in template:
        raise ValueError(f"the template must contain {{}} where the word goes, got {template!r}")
    return encoder.embed([template.format(w) for w in words]).double().numpy()


def unknown_share(encoder, words) -> float:
    """The share of ``words`` whose tokens include ``[UNK]``: words the encoder cannot read in full."""
    batch = encoder.tokenize(list(words))
    return sum("[UNK]" in tokens for tokens in batch.tokens) / len(words)


def run_test(encoder, test: WordSets, template: str = "{}", **permutation) -> dict:
    """One test on a sentence encoder: effect size, p-value, and how many words it could not read."""
    vectors = {part: embed_words(encoder, getattr(test, part), template) for part in "XYAB"}
    out = weat(vectors["X"], vectors["Y"], vectors["A"], vectors["B"], **permutation)
    out["unknown"] = unknown_share(encoder, test.X + test.Y + test.A + test.B)
    return out


__all__ = ["associations", "effect_size", "statistic", "permutation_p", "permutation_p_from", "PermutationTest", "split_count", "weat",
           "WordSets", "TESTS", "TEMPLATES", "embed_words", "unknown_share", "run_test"]
