"""Reading a GGUF file, llama.cpp's format for a model: metadata, then tensors.

A GGUF file starts with key-value metadata (``general.architecture = "llama"``,
``llama.block_count = 30``, the tokenizer's vocabulary and merges ...) and a table of tensors
(name, shape, storage type such as Q4_1 or F32), then the tensors' bytes.  The ``gguf`` package
(pinned; made by the llama.cpp project) parses it; :class:`GGUFFile` is the one place the course
opens such a file, for the tokenizer (:meth:`tinylm.tokenizers.bpe.BPETokenizer.from_gguf`) and
the parameter counts (:func:`tinylm.analysis.params.read_gguf`).
"""

from __future__ import annotations

from pathlib import Path


class GGUFFile:
    """A GGUF file's metadata fields and tensor table (the tensors' bytes are read on demand)."""

    def __init__(self, path: str | Path):
        try:
            from gguf import GGUFReader
        except ImportError:
            raise ImportError("reading GGUF files needs the gguf package: pip install gguf") from None
        self.path = Path(path)
        self.reader = GGUFReader(str(self.path))

    def field(self, name: str, default=None):
        """The value of a metadata field (a number, a string or a list), or ``default``."""
        found = self.reader.fields.get(name)
        return default if found is None else found.contents()

    def tensors(self) -> dict[str, tuple[int, str, int]]:
        """Each tensor's name -> (number of weights, storage type, bytes in the file)."""
        return {t.name: (int(t.n_elements), t.tensor_type.name, int(t.n_bytes)) for t in self.reader.tensors}

    def num_parameters(self) -> int:
        """The number of weights of all tensors."""
        return sum(n for n, _, _ in self.tensors().values())
