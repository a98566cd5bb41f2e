"""The library's commands: ``python -m tinylm COMMAND`` (or ``tinylm COMMAND`` once installed).

Commands
  recipes                               list the long runs, one line each
  train NAME [--stop-after N] [--out-dir DIR]
                                        make a recipe's model; writes DIR/NAME/ (default: checkpoints/NAME/)
  train NAME --alternatives             run the recipes NAME was chosen over (validation only); writes
                                        their logs to results/selection/
  speed [NAME] [--write]                time a GPT recipe's training step against other GPTs, and the KV cache

The course's own commands (executing, grading and benchmarking labs) are ``python -m tinylm_course``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


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

    args = parser.parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except (ValueError, FileNotFoundError, ImportError) as exc:   # a missing data package is an ImportError
        first = str(exc).strip().splitlines()
        print(f"{parser.prog} {args.command}: error: {' '.join(line.strip() for line in first)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
