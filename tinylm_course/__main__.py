"""The course's commands: ``python -m tinylm_course COMMAND`` (or ``tinylm-course COMMAND``).

Commands
  execute LAB...                run labs in fresh kernels, save them with outputs, write their editions
  exercise LAB... [-o DIR]      write the exercise edition of labs (solutions removed)
  grade SUBMISSION... [--lab N] grade students' notebooks (files or folders) against the worked lab;
                                --jobs J, --csv FILE, --feedback DIR for a whole class
  bench [LAB...]                measure each lab's seconds and peak memory on one core

The library's own commands (long training runs, timing) are ``python -m tinylm ...``.
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tinylm_course", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    from . import bench, execute, exercises, grading

    execute.add_arguments(sub.add_parser("execute", help="execute labs and save them with their outputs"))
    exercises.add_arguments(sub.add_parser("exercise", help="make the exercise edition of labs"))
    grading.add_arguments(sub.add_parser("grade", help="grade submissions (notebooks or folders)"))
    bench.add_arguments(sub.add_parser("bench", help="measure lab budgets"))

    args = parser.parse_args(argv)
    return int(args.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
