"""The ``course`` script's commands that a student types: ``./course lab N`` (and its usage text).

The script runs in a copy of the course's top folder with a stand-in virtual environment: its
``python`` is never called (setup sees an up-to-date stamp) and its ``jupyter`` records the
arguments it was given instead of starting JupyterLab.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
STAMPED = ("requirements.txt", "requirements-data.txt", "constraints.txt", "pyproject.toml")
"""The files whose content ``setup`` hashes into ``.venv/.tinylm-installed`` (in this order)."""

FAKE_JUPYTER = """#!/usr/bin/env bash
printf '%s\\n' "$@" > "$(dirname "$0")/../jupyter-args"
echo "fake jupyter started"
"""


@pytest.fixture
def course(tmp_path):
    """A course folder with the script, the exercise editions and a stand-in venv."""
    shutil.copy2(ROOT / "course", tmp_path / "course")
    shutil.copytree(ROOT / "exercises", tmp_path / "exercises")
    for name in STAMPED:
        shutil.copy2(ROOT / name, tmp_path / name)
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    for tool, text in (("python", "#!/bin/sh\nexit 99\n"), ("jupyter", FAKE_JUPYTER)):
        (venv / "bin" / tool).write_text(text)
        (venv / "bin" / tool).chmod(0o755)
    digest = hashlib.sha256(b"".join((tmp_path / n).read_bytes() for n in STAMPED)).hexdigest()
    (venv / ".tinylm-installed").write_text(digest + "\n")
    return tmp_path


def run(course: Path, *args: str) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin", "TINYLM_VENV": "venv", "HOME": str(course)}  # no DISPLAY
    return subprocess.run(["bash", str(course / "course"), *args], cwd=course, env=env,
                          capture_output=True, text=True, timeout=60)


def jupyter_args(course: Path) -> list[str]:
    return (course / "venv" / "jupyter-args").read_text().splitlines()


def test_lab_copies_the_exercise_edition_and_opens_it_in_jupyterlab(course):
    edition = next((course / "exercises").glob("lab01_*.ipynb"))
    done = run(course, "lab", "1")
    assert done.returncode == 0, done.stderr
    copy = course / "work" / edition.name
    assert copy.read_bytes() == edition.read_bytes()
    assert "### BEGIN SOLUTION" not in copy.read_text()
    args = jupyter_args(course)
    assert args[:2] == ["lab", f"work/{edition.name}"] and "--no-browser" in args
    port = next(a for a in args if a.startswith("--ServerApp.port=")).split("=")[1]
    token = next(a for a in args if a.startswith("--IdentityProvider.token=")).split("=")[1]
    assert len(token) == 32 and f"http://127.0.0.1:{port}/lab/tree/{edition.name}?token={token}" in done.stdout
    assert "fake jupyter started" in done.stdout
    assert f"grade work/{edition.name}" in done.stdout      # how to check one's own work
    assert (course / "work" / ".gitignore").read_text().splitlines()[-1] == "*"


def test_lab_never_overwrites_a_students_copy(course):
    assert run(course, "lab", "01").returncode == 0
    copy = next((course / "work").glob("lab01_*.ipynb"))
    mine = json.loads(copy.read_text())
    mine["cells"][0]["source"] = "my own work"
    copy.write_text(json.dumps(mine))
    (course / "venv" / "jupyter-args").unlink()
    done = run(course, "lab", "1")
    assert done.returncode == 0, done.stderr
    assert json.loads(copy.read_text())["cells"][0]["source"] == "my own work"
    assert "already exists" in done.stdout and "not replaced" in done.stdout
    assert jupyter_args(course)[:2] == ["lab", f"work/{copy.name}"]


def test_lab_zero_and_an_unknown_lab(course):
    assert run(course, "lab", "0").returncode == 0
    assert (course / "work" / "lab00_parameters.ipynb").is_file()
    done = run(course, "lab", "99")
    assert done.returncode == 2 and "there is no lab 99" in done.stderr and "ngrams" in done.stderr
    done = run(course, "lab", "one")
    assert done.returncode == 2 and "usage: ./course lab N" in done.stderr
    assert not (course / "work" / "lab99").exists()


def test_work_folder_is_ignored_by_git(course):
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    subprocess.run(["git", "init", "-q"], cwd=course, check=True)
    assert run(course, "lab", "1").returncode == 0
    copy = next((course / "work").glob("lab01_*.ipynb")).relative_to(course)
    ignored = subprocess.run(["git", "check-ignore", "-q", str(copy)], cwd=course)
    assert ignored.returncode == 0, f"git does not ignore {copy}"


def test_usage_lists_every_command():
    done = subprocess.run(["bash", str(ROOT / "course")], capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    script = (ROOT / "course").read_text()
    handled = set(re.findall(r"^  (\w+)\)", script.split('case "${1:-}" in', 1)[1], re.M))
    listed = set(re.findall(r"^  \./course (\w+)", done.stdout, re.M))
    assert handled and handled == listed, f"commands: {sorted(handled)}; usage text: {sorted(listed)}"
    assert "./course lab N" in done.stdout
