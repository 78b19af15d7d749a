"""A pytest plugin, loaded first by `-p session_home` in pyproject.toml's addopts.

It gives every test session its own CTRKERNEL_HOME in a temporary directory, removed at the end,
before anything is collected: tests under tests/ and notebooks under notebooks/ (whose kernels,
started by nbval and papermill, inherit the environment) alike, even when the notebooks are run
alone, so the suite never reads or writes a learner's real state (/var/lib/ctrkernel).
"""
import os
import shutil
import tempfile

HOME = tempfile.mkdtemp(prefix="ctrkernel-test-home-")
os.chmod(HOME, 0o755)
os.environ["CTRKERNEL_HOME"] = HOME


def pytest_unconfigure(config):
    shutil.rmtree(HOME, ignore_errors=True)
