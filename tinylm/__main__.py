"""The library's commands: ``python -m tinylm COMMAND`` (or ``tinylm COMMAND`` once installed).

Commands
  recipes                               list the long runs, one line each
  train NAME [--stop-after N] [--out-dir DIR]
                                        make a recipe's model; writes DIR/NAME/ (default: checkpoints/NAME/)
  train NAME --alternatives             run the recipes NAME was chosen over (validation only); writes
                                        their logs to results/selection/
  speed [NAME] [--write]                time a GPT recipe's training step against other GPTs, and the KV cache
  scaling [--pilot | --held-out]        the scaling-law sweep: pilot, grid, fit and the held-out prediction
                                        (resumes); --held-out trains the held-out run once its prediction is
                                        committed; writes results/scaling_laws.json
  score NAME [--limit N]                score the ladder's test text with a pre-trained model (the LLM rung);
                                        writes results/score-NAME.json
  speedrun [--recipe R] [--pilot S]     the three-minute speedrun: train a recipe (default: the record's) for
                                        at most 180 CPU-seconds on one thread, score validation, and if it is
                                        the best there, the test text; writes results/speedrun.json
  ablate STUDY [--seeds S ...] [--budget S] [--reuse-steps]
                                        an ablation: variants trained for equal CPU-seconds (llama-parts,
                                        moe); writes results/ablate-STUDY.json (and checkpoints/ablate-STUDY/)
  emergence [--out-dir DIR]             Lab 17's family of small decoders learning 5-digit addition, every width
                                        trained the same way; writes checkpoints/emergence/ (one folder a model, log.json)
  align [--stage S ...] [--out-dir DIR]
                                        the alignment runs from the chat-base model: SFT, preference pairs,
                                        reward models, PPO, DPO, GRPO and their evaluation (default: every
                                        stage, in order); writes checkpoints/align/ and results/alignment.json
  study NAME [--out-dir DIR]            a study of using LLMs well (decoding, prompting, scratchpad,
                                        calibration, attacks, memorisation) or of the applications
                                        (rag-book, ...); writes results/study-NAME.json
                                        (and, if it trains, checkpoints/study/NAME/)
  serve [--port N] [--model M] [--max-batch B]
                                        serve a model (default smollm2-135m-instruct) with an OpenAI-compatible
                                        API on http://127.0.0.1:N/v1 (default port 8000), batching requests
                                        continuously; prints the URL and how to call it with the openai client

The course's own commands (executing, grading and benchmarking labs) are ``python -m tinylm_course``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .results import WRITE_ENV


class Parser(argparse.ArgumentParser):
    """argparse that reports a mistake in one line (no usage block) and exits with 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def train_command(args) -> int:
    from .training.recipes import RECIPES

    recipe = RECIPES.get(args.name)
    if recipe is None:
        raise ValueError(f"no recipe {args.name!r}; choose one of {sorted(RECIPES)} (python -m tinylm recipes)")
    from .paths import checkpoints_dir, results_dir

    if args.alternatives:
        from .training.recipes import CHOICES, run_alternatives

        if not CHOICES[args.name].alternatives:
            raise ValueError(f"{args.name} has no alternatives to run")
        out_dir = Path(args.out_dir) if args.out_dir else results_dir() / "selection"
        for log in run_alternatives(args.name, out_dir):
            history = log["history"]
            print(f"{log['name']}: best validation {history['monitor']} {history['best_valid']:.4f} at step "
                  f"{history['best_step']:,}, {log['train_cpu_seconds']:.0f} CPU-s; wrote {out_dir / log['name']}.json")
        return 0
    out_dir = Path(args.out_dir) if args.out_dir else checkpoints_dir()
    log = recipe.run(out_dir, stop_after=args.stop_after)
    history = log.get("history")
    done = (f"{history['steps_done']:,} steps, best validation {history['monitor']} {history['best_valid']:.4f} "
            f"at step {history['best_step']:,}" if history else "counted")
    print(f"{recipe.name}: {log['parameters']:,} parameters, {done}, {log['train_cpu_seconds']:.0f} CPU-s, "
          f"peak {log['peak_mb']} MB; wrote {out_dir / recipe.name}")
    return 0


def recipes_command(args) -> int:
    from .training.recipes import RECIPES

    for recipe in RECIPES.values():
        print(recipe.summary())
    return 0


def speed_command(args) -> int:
    from .analysis import speed

    speed.run(args.name, args.write)
    return 0


def score_command(args) -> int:
    from .evaluation import long_scores

    log = long_scores.run(args.name, limit=args.limit)
    print(f"{args.name}: {log['bpc']:.4f} bits per character over {log['chars']:,} characters "
          f"({log['tokens']:,} tokens), {log['cpu_seconds']:.0f} CPU-s, peak {log['peak_mb']} MB")
    return 0


def scaling_command(args) -> int:
    from .training import scaling

    if args.held_out:
        scaling.run_held_out(progress=True)
    elif args.pilot:
        recipe = scaling.run_pilot(progress=True)
        print(f"pilot chose batch {recipe.batch_size} and learning rate {recipe.lr:g}")
    else:
        store = scaling.run_grid(progress=True)
        fit, held = store["fit"], store["held_out"]
        print(f"{len(store['runs'])} runs; fit L = {fit['E']:.3f} + {fit['A']:.4g}/N^{fit['alpha']:.3f} + "
              f"{fit['B']:.4g}/D^{fit['beta']:.3f} bpc; held-out N = {held['N']:,}, D = {held['D']:,}: predicted "
              f"{held['predicted_bpc']:.4f} bpc")
    print(f"CPU-seconds so far: {scaling.load_results()['cpu_seconds']}; wrote {scaling.results_path()}")
    return 0


def speedrun_command(args) -> int:
    from .training import speedrun

    sub = speedrun.load_submission(args.recipe) if args.recipe else speedrun.CANDIDATES[speedrun.RECORD]
    out = Path(args.out_dir) if args.out_dir else None
    if args.pilot:
        e = speedrun.run_pilot(sub, args.pilot, out)
        print(f"pilot {e['name']} for {args.pilot:g} CPU-s: {e['steps']:,} steps in {e['train_cpu_seconds']:.1f} CPU-s, "
              f"validation {e['valid_bpc']:.4f} bpc; the whole recipe would take about "
              f"{e['projected_cpu_seconds']:.0f} CPU-s (budget {speedrun.BUDGET:g})")
        return 0
    e = speedrun.compete(sub, out)
    print(f"{e['name']}: {e['steps']:,} steps in {e['train_cpu_seconds']:.1f} CPU-s of training (budget "
          f"{speedrun.BUDGET:g}), validation {e['valid_bpc']:.4f} bpc")
    results = speedrun.load_results(out)
    if e.get("record"):
        print(f"the best on validation: the record. Test {e['test_bpc']:.4f} bpc; wrote {speedrun.record_dir(out)}")
    else:
        print(f"not the best on validation (the record is {results['record']['name'] if results['record'] else '?'}); "
              "test not scored")
    print(speedrun.leaderboard_table(results))
    return 0


def ablate_command(args) -> int:
    from .training import ablations

    if args.study not in ablations.STUDIES:
        raise ValueError(f"no study {args.study!r}; choose one of {sorted(ablations.STUDIES)}")
    study = ablations.STUDIES[args.study]
    out = Path(args.out) if args.out else ablations.log_path(study.name)
    reuse = ablations.load(study.name) if args.reuse_steps else None
    checkpoints = None if args.out else ablations.checkpoint_dir(study.name)
    log = ablations.run(study, out, checkpoints, seeds=tuple(args.seeds) if args.seeds else None,
                        budget=args.budget, reuse=reuse)
    print(f"{study.name}: {len(log['runs'])} runs, {log['total_cpu_seconds']:.0f} CPU-s in all; wrote {out}")
    return 0


def emergence_command(args) -> int:
    from .paths import checkpoints_dir
    from .training import emergence

    out = Path(args.out_dir) if args.out_dir else checkpoints_dir() / emergence.NAME
    log = emergence.SWEEP.run(out)
    print(f"{emergence.NAME}: {len(log['runs'])} models, {log['train_cpu_seconds']:.0f} CPU-s of training "
          f"({log['cpu_seconds']:.0f} in all); wrote {out}")
    return 0


def align_command(args) -> int:
    from .alignment import pipeline

    stages = {**pipeline.STAGES, **pipeline.SELECTION}
    unknown = [s for s in args.stage or () if s not in stages]
    if unknown:
        raise ValueError(f"no stage {unknown[0]!r}; the stages are {', '.join(stages)}")
    out = Path(args.out_dir) if args.out_dir else None
    for name in args.stage or pipeline.STAGES:
        log = stages[name](out)
        print(f"align {name}: {log.get('cpu_seconds', 0):.0f} CPU-s; {pipeline.summary(name, log)}")
    return 0


def study_command(args) -> int:
    from .usage import studies

    log = studies.run(args.name, Path(args.out_dir) if args.out_dir else None)
    print(f"study {args.name}: {log.get('cpu_seconds', 0):.0f} CPU-s; wrote results/{studies.result_name(args.name)}.json")
    return 0


def serve_command(args) -> int:
    from .deploy import server

    server.serve(port=args.port, model=args.model, max_batch=args.max_batch)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = Parser(prog="python -m tinylm", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    sub.add_parser("recipes", help="list the recipes").set_defaults(run=recipes_command)
    trainer = sub.add_parser("train", help="make a recipe's model and write its checkpoint")
    trainer.add_argument("name", help="a recipe (see: python -m tinylm recipes)")
    trainer.add_argument("--stop-after", type=int, metavar="N",
                         help="run only the first N steps of the recipe's schedule (a trial; marked in the log)")
    trainer.add_argument("--out-dir", metavar="DIR", help="where to write NAME/ (default: <course root>/checkpoints)")
    trainer.add_argument("--alternatives", action="store_true",
                         help="instead, run the recipes it was chosen over, on validation only, and write their "
                              "logs to results/selection/ (or DIR)")
    trainer.set_defaults(run=train_command)
    speed = sub.add_parser("speed", help="time a GPT's training step and generation")
    speed.add_argument("name", nargs="?", default="gpt", help="the GPT recipe whose shape to time (default gpt)")
    speed.add_argument("--write", action="store_true", help="keep the numbers in results/gpt_speed.json")
    speed.set_defaults(run=speed_command)
    scaling = sub.add_parser("scaling", help="the scaling-law sweep, its fit and the held-out prediction")
    which = scaling.add_mutually_exclusive_group()
    which.add_argument("--pilot", action="store_true", help="only the pilot that chooses the learning rate")
    which.add_argument("--held-out", action="store_true",
                       help="train the held-out run (after its prediction is committed) and record the error")
    scaling.set_defaults(run=scaling_command)
    scorer = sub.add_parser("score", help="score the ladder's test text with a pre-trained model")
    scorer.add_argument("name", help="a pre-trained model (smollm2-135m-instruct)")
    scorer.add_argument("--limit", type=int, metavar="N", help="only the first N characters (a trial)")
    scorer.set_defaults(run=score_command)
    runner = sub.add_parser("speedrun", help="the three-minute speedrun (180 CPU-seconds of training, one thread)")
    runner.add_argument("--recipe", metavar="R", help="a candidate's name, a JSON file or JSON text (default: the record's)")
    runner.add_argument("--pilot", type=float, metavar="S",
                        help="a pilot: the recipe with its steps scaled to S of the 180 CPU-seconds (validation only)")
    runner.add_argument("--out-dir", metavar="DIR",
                        help="write speedrun.json and record/ to DIR (default: results/ and checkpoints/speedrun/)")
    runner.set_defaults(run=speedrun_command)
    ablate = sub.add_parser("ablate", help="an ablation study: variants trained for equal CPU-seconds")
    ablate.add_argument("study", help="llama-parts or moe")
    ablate.add_argument("--seeds", type=int, nargs="+", metavar="S", help="seeds to run (default: the study's)")
    ablate.add_argument("--budget", type=float, metavar="S", help="training CPU-seconds per run (default: the study's)")
    ablate.add_argument("--reuse-steps", action="store_true",
                        help="train with the steps of the committed log instead of timing again (repeats it)")
    ablate.add_argument("--out", metavar="FILE", help="write the log here instead (a trial; no checkpoints)")
    ablate.set_defaults(run=ablate_command)
    emerge = sub.add_parser("emergence", help="Lab 17's family of small decoders learning addition")
    emerge.add_argument("--out-dir", metavar="DIR", help="write the models and log.json here (default: checkpoints/emergence)")
    emerge.set_defaults(run=emergence_command)

    aligner = sub.add_parser("align", help="the alignment runs: SFT, reward models, PPO, DPO, GRPO, evaluation")
    aligner.add_argument("--stage", nargs="+", metavar="S", help="run only these stages, in the order given")
    aligner.add_argument("--out-dir", metavar="DIR", help="write the stages' folders here (default: checkpoints/align)")
    aligner.set_defaults(run=align_command)
    studier = sub.add_parser("study", help="a study of using LLMs well (tinylm.usage) or of the applications (tinylm.rag, tinylm.agents)")
    studier.add_argument("name", help="decoding, prompting, scratchpad, calibration, attacks or memorisation")
    studier.add_argument("--out-dir", metavar="DIR", help="write its checkpoints here (default: checkpoints/study/NAME)")
    studier.set_defaults(run=study_command)
    server = sub.add_parser("serve", help="an OpenAI-compatible server on 127.0.0.1 with continuous batching")
    server.add_argument("--port", type=int, default=8000, metavar="N", help="the port on 127.0.0.1 (default 8000)")
    server.add_argument("--model", default="smollm2-135m-instruct", metavar="M",
                        help="the model to serve (default smollm2-135m-instruct)")
    server.add_argument("--max-batch", type=int, default=8, metavar="B",
                        help="requests decoded together at most (default 8; 1: one at a time)")
    server.set_defaults(run=serve_command)

    args = parser.parse_args(argv)
    # A command is the asked-for way to make results: it writes them (a lab run for practice does not).
    os.environ.setdefault(WRITE_ENV, "1")
    try:
        return int(args.run(args) or 0)
    except (ValueError, FileNotFoundError, ImportError) as exc:   # a missing data package is an ImportError
        first = str(exc).strip().splitlines()
        print(f"{parser.prog} {args.command}: error: {' '.join(line.strip() for line in first)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
