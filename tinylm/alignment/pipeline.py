"""The alignment runs, in order, from one command: ``python -m tinylm align``.

1. **base**: the pre-trained base model, the recipe ``chat-base`` (``python -m tinylm train chat-base``);
2. **sft**: supervised fine-tuning on the training requests (:mod:`~tinylm.alignment.sft`);
3. **pairs**: preference pairs from the SFT model's samples (:mod:`~tinylm.alignment.preferences`);
4. the tuned models, each starting from the SFT model, which is also their reference;
5. **evaluation**: every model's held-out accuracy per task (test requests), its KL to the
   reference, and its bits per character on the ladder's Shakespeare test text (the "alignment
   tax"), into ``results/alignment.json``.

Each stage writes its checkpoint under ``checkpoints/align/`` with a log (its configuration,
CPU-seconds, the code's commit at the start of the run); a later stage loads the checkpoints
before it, so a stage can be run again alone (``--stage``).  Everything runs on one thread,
seeded, deterministic.  Configurations were set before the runs and are recorded; any choice
between them was made on the validation requests, never on test.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path

from .. import system
from ..data.instructions import ChatTemplate, examples
from ..paths import course_root
from ..results import rounded as _rounded
from ..training.loop import TrainConfig, one_thread_deterministic, seed_everything, train
from .sft import SFT, accuracy, base_accuracy, sft_pairs

BASE = "chat-base"
"""The recipe of the base model (:mod:`tinylm.training.recipes`)."""


def align_dir() -> Path:
    return course_root() / "checkpoints" / "align"


def load_base():
    """``(model, tokenizer, log)`` of the committed base model."""
    from ..checkpoint import load

    return load(course_root() / "checkpoints" / BASE)


def load_stage(name: str, out_dir: Path | None = None):
    """``(model, tokenizer, log)`` of a stage's committed checkpoint, e.g. ``"sft"``."""
    from ..checkpoint import load

    path = (out_dir or align_dir()) / name
    if not path.is_dir():
        raise FileNotFoundError(f"no checkpoint {path}: run `python -m tinylm align --stage {name}` first")
    return load(path)


@dataclass(frozen=True)
class SFTConfig:
    """Supervised fine-tuning: every training request once per pass, answers only in the loss."""

    train: TrainConfig = TrainConfig(steps=600, batch_size=64, lr=1e-3, warmup=50, min_lr_ratio=0.1,
                                     weight_decay=0.0, eval_every=100)
    valid_per_task: int = 100
    demonstrations_per_task: int | None = None   # training requests with a written answer (None: all)


def run_sft(base, tokenizer, config: SFTConfig = SFTConfig(), stop_after: int | None = None):
    """``(model, log)``: a copy of ``base`` fine-tuned on every training request in the chat template."""
    import copy

    template = ChatTemplate(tokenizer)
    objective = SFT(sft_pairs(examples("train", config.demonstrations_per_task), template),
                    sft_pairs(examples("valid", config.valid_per_task), template), pad_id=template.pad_id)
    seed_everything(config.train.seed)
    model = copy.deepcopy(base)
    history = train(model, objective, dataclasses.replace(config.train, stop_after=stop_after))
    return model, {"history": history.to_dict(), "train_cpu_seconds": round(history.train_cpu_seconds, 1),
                   "pairs": len(objective.pairs)}


def _run(name: str, make, out_dir: Path | None = None) -> dict:
    """Run one stage on one thread and save its checkpoint with its log."""
    from ..checkpoint import save

    with one_thread_deterministic():
        code, started = system.code_commit(), time.process_time()
        model, tokenizer, log = make()
        log = {"stage": name, **log, "cpu_seconds": round(time.process_time() - started, 1),
               "peak_mb": round(system.peak_memory_mb()), "machine": system.machine(), "code": code}
    save((out_dir or align_dir()) / name, model, tokenizer, log)
    return log


STAGE_SFT = "sft"

SFT_CANDIDATES = {
    "sft-600": SFTConfig(),
    "sft-1500": SFTConfig(train=dataclasses.replace(SFTConfig().train, steps=1500, eval_every=250)),
    "sft-1500-lr2e-3": SFTConfig(train=dataclasses.replace(SFTConfig().train, steps=1500, eval_every=250, lr=2e-3)),
}
"""SFT recipes on *every* training request, compared on the validation requests
(``--stage sft-selection``, logs in ``results/selection/alignment-sft.json``): the evidence that
with that many demonstrations SFT alone is enough (see :data:`DEMONSTRATIONS`)."""

DEMONSTRATIONS = 400
"""Training requests per task that come with a written answer for SFT.  Answers written by people
are the costly part of alignment (InstructGPT had about 13 thousand), while requests alone, and
preferences between answers, are cheaper.  With every training request as a demonstration, SFT
alone answers 99% of the validation requests right (``results/selection/alignment-sft.json``,
the candidates above), which would leave the later steps nothing to show; with 400 per task the
later steps have room, as in practice."""

SFT_RECIPES = {
    "sft-300": SFTConfig(train=dataclasses.replace(SFTConfig().train, steps=300, eval_every=50),
                         demonstrations_per_task=DEMONSTRATIONS),
    "sft-600": SFTConfig(demonstrations_per_task=DEMONSTRATIONS),
}
"""The SFT recipes the ``sft`` stage trains on the demonstrations; it keeps the one with the best
greedy accuracy on the validation requests and logs both."""


def stage_sft_selection(out_dir: Path | None = None) -> dict:
    """Train every SFT candidate and score it on the validation requests (greedy answers); write
    the logs, without weights, to ``results/selection/alignment-sft.json``."""
    import json

    from ..paths import course_root as root

    valid = examples("valid")
    with one_thread_deterministic():
        code, started = system.code_commit(), time.process_time()
        base, tokenizer, _ = load_base()
        template = ChatTemplate(tokenizer)
        runs = {}
        for name, config in SFT_CANDIDATES.items():
            model, log = run_sft(base, tokenizer, config)
            runs[name] = {"config": dataclasses.asdict(config), "valid_accuracy": accuracy(model, template, valid),
                          "train_cpu_seconds": log["train_cpu_seconds"]}
    log = {"stage": "sft-selection", "runs": runs, "best": max(runs, key=lambda n: runs[n]["valid_accuracy"]["all"]),
           "cpu_seconds": round(time.process_time() - started, 1), "code": code}
    target = (out_dir or root() / "results" / "selection") / "alignment-sft.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(_rounded(log), indent=1) + "\n")
    return log


def stage_sft(out_dir: Path | None = None) -> dict:
    def make():
        base, tokenizer, _ = load_base()
        template, valid = ChatTemplate(tokenizer), examples("valid")
        trained, candidates = {}, {}
        for name, config in SFT_RECIPES.items():
            model, log = run_sft(base, tokenizer, config)
            trained[name] = (model, log)
            candidates[name] = {"valid_accuracy": accuracy(model, template, valid),
                                "train_cpu_seconds": log["train_cpu_seconds"]}
        choice = max(candidates, key=lambda n: candidates[n]["valid_accuracy"]["all"])
        model, log = trained[choice]
        return model, tokenizer, {"config": dataclasses.asdict(SFT_RECIPES[choice]), "choice": choice,
                                  "candidates": candidates, **log}
    return _run("sft", make, out_dir)


# --------------------------------------------------------------------------- preference pairs

PAIR_SPLITS = ("train", "valid", "test")
FLAWED_TEMPERATURE = 1.5
"""The flawed labeller is shown answers sampled hotter, so that more pairs differ in length."""


def pairs_dir(out_dir: Path | None = None) -> Path:
    return (out_dir or align_dir()) / "pairs"


def stage_pairs(out_dir: Path | None = None) -> dict:
    """Preference pairs from the SFT model's samples, for every request of each split: labelled
    by the honest labeller, and (train and valid) by the labeller with a taste for length."""
    from .preferences import candidates, label, pair_agreement, prefers_correct, save_pairs
    from .reward import verbose_labeller

    with one_thread_deterministic():
        code, started = system.code_commit(), time.process_time()
        sft, tokenizer, _ = load_stage(STAGE_SFT, out_dir)
        template = ChatTemplate(tokenizer)
        counts = {}
        for split in PAIR_SPLITS:
            requests = examples(split)
            honest = label(requests, candidates(sft, template, requests), template, prefers_correct)
            save_pairs(pairs_dir(out_dir) / f"{split}.json", honest)
            counts[split] = len(honest)
            if split != "test":
                flawed = label(requests, candidates(sft, template, requests, temperature=FLAWED_TEMPERATURE),
                               template, verbose_labeller(1.0))
                save_pairs(pairs_dir(out_dir) / f"flawed-{split}.json", flawed)
                counts[f"flawed-{split}"] = len(flawed)
                counts[f"flawed-{split}-honest-agreement"] = pair_agreement(flawed, template, prefers_correct)
    log = {"stage": "pairs", "pairs": counts, "requests": {s: len(examples(s)) for s in PAIR_SPLITS},
           "cpu_seconds": round(time.process_time() - started, 1), "code": code}
    (pairs_dir(out_dir) / "log.json").write_text(json.dumps(_rounded(log), indent=1) + "\n")
    return log


def load_pairs(name: str, out_dir: Path | None = None):
    from .preferences import load_pairs as read

    path = pairs_dir(out_dir) / f"{name}.json"
    if not path.is_file():
        raise FileNotFoundError(f"no pairs {path}: run `python -m tinylm align --stage pairs` first")
    return read(path)


# --------------------------------------------------------------------------- reward models and PPO

def _reward_config():
    from .reward import RewardConfig

    return RewardConfig(train=TrainConfig(steps=600, batch_size=32, lr=3e-4, warmup=20, min_lr_ratio=0.1,
                                          weight_decay=0.0, eval_every=100, progress=False))


def _stage_reward(name: str, flawed: bool, out_dir: Path | None) -> dict:
    from .reward import pair_accuracy, save_reward_model, train_reward_model

    prefix = "flawed-" if flawed else ""
    with one_thread_deterministic():
        code, started = system.code_commit(), time.process_time()
        sft, tokenizer, _ = load_stage(STAGE_SFT, out_dir)
        config = _reward_config()
        rm, log = train_reward_model(sft, load_pairs(f"{prefix}train", out_dir), load_pairs(f"{prefix}valid", out_dir),
                                     config)
        log["test_pair_accuracy"] = round(pair_accuracy(rm, load_pairs("test", out_dir)), 4)
        if flawed:
            log["honest_valid_pair_accuracy"] = round(pair_accuracy(rm, load_pairs("valid", out_dir)), 4)
        log = {"stage": name, "config": dataclasses.asdict(config), **log,
               "cpu_seconds": round(time.process_time() - started, 1), "peak_mb": round(system.peak_memory_mb()),
               "machine": system.machine(), "code": code}
    save_reward_model((out_dir or align_dir()) / name, rm, tokenizer, log)
    return log


def stage_reward(out_dir: Path | None = None) -> dict:
    """The reward model, fitted to the honest labeller's pairs."""
    return _stage_reward("reward", False, out_dir)


def stage_reward_flawed(out_dir: Path | None = None) -> dict:
    """A reward model fitted to the pairs of the labeller with a taste for length."""
    return _stage_reward("reward-flawed", True, out_dir)


def load_reward(name: str = "reward", out_dir: Path | None = None):
    from .reward import load_reward_model

    path = (out_dir or align_dir()) / name
    if not path.is_dir():
        raise FileNotFoundError(f"no reward model {path}: run `python -m tinylm align --stage {name}` first")
    return load_reward_model(path)


def ppo_configs():
    """The PPO runs: the main one against the honest reward model, and two against the flawed
    one, with a small KL coefficient (reward hacking) and a large one (the leash)."""
    from .ppo import PPOConfig

    return {"ppo": ("reward", PPOConfig(iterations=60, lr=1e-5, beta=0.1)),
            "ppo-hacked": ("reward-flawed", PPOConfig(iterations=60, lr=3e-5, beta=0.01, max_new_tokens=16)),
            "ppo-leash": ("reward-flawed", PPOConfig(iterations=60, lr=3e-5, beta=0.2, max_new_tokens=16))}


def _stage_ppo(name: str, out_dir: Path | None) -> dict:
    from .ppo import run_ppo

    reward_name, config = ppo_configs()[name]

    def make():
        sft, tokenizer, _ = load_stage(STAGE_SFT, out_dir)
        rm, _, _ = load_reward(reward_name, out_dir)
        policy, log = run_ppo(sft, rm.score, config, ChatTemplate(tokenizer))
        return policy, tokenizer, {"reward_model": reward_name, "config": dataclasses.asdict(config), **log}
    return _run(name, make, out_dir)


def stage_ppo(out_dir: Path | None = None) -> dict:
    return _stage_ppo("ppo", out_dir)


def stage_ppo_hacked(out_dir: Path | None = None) -> dict:
    return _stage_ppo("ppo-hacked", out_dir)


def stage_ppo_leash(out_dir: Path | None = None) -> dict:
    return _stage_ppo("ppo-leash", out_dir)


# --------------------------------------------------------------------------- DPO and GRPO

DPO_BETAS = (0.03, 0.1, 0.3)
"""DPO's sweep for the reward-against-KL plot; the main DPO model is the one at DPOConfig's β."""


def dpo_config():
    """DPO's recipe: β = 0.1 and 300 steps of batch 32 (:class:`~tinylm.alignment.dpo.DPOConfig`), at a
    learning rate of 2e-5.  The first committed run used 1e-4 and answered 0.325 of the validation
    requests right, far below the SFT model's 0.7025; 2e-5, tried next on validation, answered 0.6125
    (``results/selection/alignment-alternatives.json``), so the recipe changed to it.  The test
    requests played no part."""
    from .dpo import DPOConfig

    return DPOConfig(train=dataclasses.replace(DPOConfig().train, lr=2e-5))


def stage_dpo(out_dir: Path | None = None) -> dict:
    """DPO on the honest pairs (the main model, β = 0.1), and the β sweep on validation requests."""
    from .dpo import beta_sweep, run_dpo

    def make():
        sft, tokenizer, _ = load_stage(STAGE_SFT, out_dir)
        template = ChatTemplate(tokenizer)
        train_pairs, valid_pairs = load_pairs("train", out_dir), load_pairs("valid", out_dir)
        config = dpo_config()
        policy, log = run_dpo(sft, train_pairs, valid_pairs, config, template.pad_id)
        sweep = beta_sweep(sft, template, train_pairs, valid_pairs, examples("valid"),
                           [b for b in DPO_BETAS if b != config.beta], config)
        return policy, tokenizer, {"config": config.to_dict(), **log, "sweep": sweep}
    return _run("dpo", make, out_dir)


def grpo_configs():
    from .grpo import GRPOConfig

    return {"grpo": GRPOConfig(), "grpo-nokl": GRPOConfig(beta=0.0)}


def _stage_grpo(name: str, out_dir: Path | None) -> dict:
    from .grpo import run_grpo

    config = grpo_configs()[name]

    def make():
        sft, tokenizer, _ = load_stage(STAGE_SFT, out_dir)
        policy, log = run_grpo(sft, config, ChatTemplate(tokenizer))
        return policy, tokenizer, {"config": config.to_dict(), **log}
    return _run(name, make, out_dir)


def stage_grpo(out_dir: Path | None = None) -> dict:
    return _stage_grpo("grpo", out_dir)


def stage_grpo_nokl(out_dir: Path | None = None) -> dict:
    return _stage_grpo("grpo-nokl", out_dir)


TUNED = ("ppo", "dpo", "grpo")
"""The three tuned models of the results table, each from the SFT model."""
EXTRA = ("ppo-hacked", "ppo-leash", "grpo-nokl")
"""Tuned models that show one effect (reward hacking, the KL leash, GRPO without its KL term):
scored on test like the others, outside the main table."""

RESULTS = "alignment"
"""``results/alignment.json``."""


def evaluate(out_dir: Path | None = None, bpc_chars: int | None = None) -> dict:
    """Score the base model, the SFT model and every tuned model on the test requests; write
    ``results/alignment.json`` (merged into what the stages before wrote there) and return it."""
    from .. import results
    from .measures import KL_SAMPLES, kl_to_reference, shakespeare_bpc

    def load(name):
        return load_stage(name, out_dir)

    code, started = system.code_commit(), time.process_time()
    base, tokenizer, _ = load_base()
    sft, _, _ = load(STAGE_SFT)
    template = ChatTemplate(tokenizer)
    test = examples("test")
    models = {"sft": sft, **{name: load(name)[0] for name in TUNED + EXTRA}}
    store = results.load(RESULTS) if results.path(RESULTS).exists() else {}
    store.update({
        "heldout_accuracy": {"base": base_accuracy(base, tokenizer, test),
                             "base_chat": accuracy(base, template, test),
                             **{name: accuracy(model, template, test) for name, model in models.items()}},
        "kl_to_reference": {name: kl_to_reference(model, sft, template, test) for name, model in models.items()},
        "shakespeare_bpc": {name: shakespeare_bpc(model, tokenizer, bpc_chars)      # the table's models
                            for name, model in {"base": base, **models}.items() if name not in EXTRA},
        "reward_model_accuracy": load_reward("reward", out_dir)[2]["test_pair_accuracy"],
        "flawed_reward_model_accuracy": load_reward("reward-flawed", out_dir)[2]["test_pair_accuracy"],
        "test_requests": len(test),
    })
    store["heldout_accuracy"]["base_note"] = ("base: few-shot raw prompts (three solved training problems); "
                                              "base_chat: the chat template, zero-shot")
    store["evaluation"] = {"cpu_seconds": round(time.process_time() - started, 1), "code": code,
                           "kl": f"kl_to_reference on the test requests, {KL_SAMPLES} sampled answers each",
                           "bpc": "the whole Shakespeare test split" if bpc_chars is None else f"its first {bpc_chars:,} characters"}
    store["cpu_seconds"] = store["evaluation"]["cpu_seconds"]
    results.save(RESULTS, _rounded(store))
    return store


def summary(name: str, log: dict) -> str:
    """One line about a stage's result, for the command."""
    best = log.get("history", {}).get("best") if isinstance(log.get("history"), dict) else None
    return f"best validation {best}" if best is not None else ", ".join(
        f"{k} {v}" for k, v in log.items() if k in ("pairs", "accuracy", "pair_accuracy", "best"))


STAGES = {"sft": stage_sft, "pairs": stage_pairs, "reward": stage_reward, "reward-flawed": stage_reward_flawed,
          "ppo": stage_ppo, "ppo-hacked": stage_ppo_hacked, "ppo-leash": stage_ppo_leash, "dpo": stage_dpo,
          "grpo": stage_grpo, "grpo-nokl": stage_grpo_nokl, "evaluate": evaluate}
SELECTION = {"sft-selection": stage_sft_selection}
"""Stages that choose a recipe on validation; run only when named (``--stage sft-selection``)."""
"""The stages in the order ``python -m tinylm align`` runs them."""
