"""Command line: ``python -m tinylm COMMAND`` (or ``tinylm COMMAND`` once installed).

Commands
  execute LAB...               run labs in fresh kernels, save them with outputs, write their editions
  exercise LAB... [-o DIR]     write the exercise edition of labs (solutions removed)
  grade SUBMISSION [--lab LAB]  grade a student's notebook against the worked lab
  bench [LAB...]               measure each lab's seconds and peak memory on one core
  rung {list,train NAME}       train a ladder rung for longer than a lab may (tinylm.rungs)
  pretrain [NAME]              pre-train a masked language model, or list the recipes (tinylm.mlm)
  speed [RUNG] [--write]       time our GPT's training step against others, and the KV cache
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tinylm", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    from . import bench, execute, exercises, grading, mlm, rungs, speed

    execute.add_arguments(sub.add_parser("execute", help="execute labs and save them with their outputs"))
    exercises.add_arguments(sub.add_parser("exercise", help="make the exercise edition of labs"))
    grading.add_arguments(sub.add_parser("grade", help="grade a submission"))
    bench.add_arguments(sub.add_parser("bench", help="measure lab budgets"))
    rungs.add_arguments(sub.add_parser("rung", help="train a ladder rung"))
    mlm.add_arguments(sub.add_parser("pretrain", help="pre-train a masked language model"))
    speed.add_arguments(sub.add_parser("speed", help="time the GPT against other implementations"))

    args = parser.parse_args(argv)
    return int(args.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
