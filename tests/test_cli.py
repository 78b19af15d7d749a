"""The command line: Docker-shaped verbs, help from docstrings, exit conventions."""
import json
import subprocess
import sys
from pathlib import Path

from ctrkernel.cli import main


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "ctrkernel", *args], capture_output=True,
                          text=True, timeout=120)


def test_help_lists_verbs():
    done = run_cli("--help")
    assert done.returncode == 0
    assert "doctor" in done.stdout


def test_doctor_json_is_one_object():
    done = run_cli("doctor", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["isolation"] in ("full", "rootless", "none")
    assert all({"name", "ok", "detail"} <= set(c) for c in report["checks"])


def test_console_script_is_installed():
    script = Path(sys.executable).parent / "ctrkernel"
    assert script.exists(), "pip install should have created the ctrkernel command"
    done = subprocess.run([str(script), "doctor"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "isolation:" in done.stdout


def test_unknown_verb_is_a_usage_error(capsys):
    try:
        main(["frobnicate"])
    except SystemExit as e:
        assert e.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_run_on_a_binder_like_host_says_what_it_could_not_isolate(unprivileged_home):
    """Never pretend: without namespaces `--hostname` cannot take effect, and the command line
    says so (and that nothing is isolated) on stderr, while the command still runs."""
    from conftest import binder_sim
    done = binder_sim([sys.executable, "-m", "ctrkernel", "run", "--rm", "--hostname",
                       "learner", "busybox", "hostname"],
                      env={"CTRKERNEL_HOME": str(unprivileged_home)})
    if "proot" in done.stderr and done.returncode == 125:
        import pytest
        pytest.skip("no proot here: nothing runs without namespaces")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() != "learner"
    assert "WARNING: hostname 'learner' not set" in done.stderr
    assert "WARNING: no namespaces" in done.stderr
