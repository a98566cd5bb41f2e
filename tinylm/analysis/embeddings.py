"""Looking at vectors: cosine similarity, nearest neighbours, and a 2-D picture by PCA.

Embeddings (a character's, a word's, a sentence's) are compared by direction, not length: the
**cosine similarity** cos(u, v) = u . v / (|u| |v|) is 1 for vectors pointing the same way, 0
for orthogonal ones.  To draw many vectors on a page, project them on their first two principal
components (PCA, 主成分分析).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def unit_rows(X) -> np.ndarray:
    """Each row divided by its length (rows of zeros stay zero), in float64."""
    X = np.asarray(X, dtype=np.float64)
    norms = np.sqrt(np.einsum("ij,ij->i", X, X))[:, None]
    return np.divide(X, norms, out=np.zeros_like(X), where=norms > 0)


def cosine_similarities(a, b=None):
    """The (n, m) matrix of cosine similarities between the rows of ``a`` (n, d) and of ``b``
    (m, d); ``b`` defaults to ``a``.  Torch tensors in give a tensor out (in their dtype); anything
    else gives a float64 numpy array."""
    if isinstance(a, torch.Tensor):
        a = F.normalize(a, dim=-1)
        return a @ (a if b is None else F.normalize(b, dim=-1)).T
    a = unit_rows(a)
    return a @ (a if b is None else unit_rows(b)).T


def nearest_neighbours(vectors, index: int, k: int = 5, among=None) -> list[int]:
    """The ``k`` rows most similar to row ``index`` by cosine similarity, most similar first.

    ``among`` restricts the candidates to some rows (for example the characters seen often
    enough in training for their vectors to have been learnt); row ``index`` itself is never
    returned.  Ties go to the smaller row number.
    """
    similarity = cosine_similarities(vectors)[index]
    candidates = np.arange(len(similarity)) if among is None else np.asarray(sorted(set(int(i) for i in among)))
    candidates = candidates[candidates != index]
    order = np.lexsort((candidates, -similarity[candidates]))     # by similarity, then by row
    return [int(i) for i in candidates[order[:k]]]


def pca_2d(X) -> np.ndarray:
    """The rows of ``X`` projected on their first two principal components, for a plot.

    The rows are centred and the two directions of largest variance found by an SVD.  An SVD
    may return a direction or its opposite; the sign is fixed so that the largest loading of each
    component is positive, so the picture does not flip between machines.
    """
    X = np.asarray(X, dtype=np.float64)
    Xc = X - X.mean(axis=0)
    _, _, Vt = np.linalg.svd(Xc, full_matrices=False)
    comps = Vt[:2]
    comps = comps * np.sign(comps[np.arange(2), np.argmax(np.abs(comps), axis=1)])[:, None]
    return Xc @ comps.T
