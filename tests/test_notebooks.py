"""Every notebook executes headless with papermill as a Binder-like user (uid 1000, nothing can
be isolated), and chosen ones also rootless. As root they are validated by nbval (pytest collects
notebooks/*.ipynb with --nbval-lax), so together the three kinds of host are covered.
"""
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

from conftest import REPO, binder_sim

NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
# Chapters whose point is isolation also run rootless (user namespaces allowed).
ROOTLESS = [nb for nb in NOTEBOOKS if nb.name.startswith(("00.", "02."))]


@pytest.fixture
def user_dir():
    path = Path(tempfile.mkdtemp(prefix="ctrkernel-nb-"))
    for sub in ("home", "state"):
        (path / sub).mkdir()
    for p in (path, path / "home", path / "state"):
        os.chown(p, 1000, 1000)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def execute_as_user(notebook, user_dir, userns):
    output = user_dir / "home" / notebook.name
    env = {"BINDER_SIM_HOME": str(user_dir / "home"), "CTRKERNEL_HOME": str(user_dir / "state"),
           "JUPYTER_RUNTIME_DIR": str(user_dir / "home" / "runtime")}
    done = binder_sim([sys.executable, "-m", "papermill", str(notebook), str(output),
                       "--cwd", str(notebook.parent), "-k", "python3", "--no-progress-bar"],
                      userns=userns, env=env, timeout=900)
    assert done.returncode == 0, f"{notebook.name} failed as uid 1000:\n{done.stderr[-4000:]}"
    executed = json.loads(output.read_text())
    errors = [o for c in executed["cells"] for o in c.get("outputs", [])
              if o.get("output_type") == "error"
              and "raises-exception" not in c.get("metadata", {}).get("tags", [])]
    assert not errors, errors
    return executed


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs_on_a_binder_like_host(notebook, user_dir):
    execute_as_user(notebook, user_dir, userns=False)


@pytest.mark.parametrize("notebook", ROOTLESS, ids=lambda p: p.name)
def test_notebook_runs_rootless(notebook, user_dir):
    execute_as_user(notebook, user_dir, userns=True)


def test_welcome_shows_the_honest_account_on_binder(user_dir):
    executed = execute_as_user(REPO / "notebooks" / "00.00-Welcome.ipynb", user_dir, userns=False)
    text = json.dumps(executed)
    assert "isolation: none" in text
    assert "fallback:" in text  # chapters say what they fall back to
