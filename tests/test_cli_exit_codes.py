"""Docker's exit conventions on the command line, run as a user runs it (`python -m ctrkernel`):
125 for a flag error of any verb and for any engine failure of `run`/`create`, negative-looking
flag values taken as values, `--entrypoint ""` clearing the image's, and a reader that goes
away (`| head -1`) ending the command quietly."""
import os
import subprocess
import sys

import pytest

from conftest import requires_isolation

runs_containers = requires_isolation("full", "rootless")


def cli(*args, stdout=subprocess.PIPE):
    return subprocess.run([sys.executable, "-m", "ctrkernel", *args], stdout=stdout,
                          stderr=subprocess.PIPE, text=True, timeout=300)


def names_in_ps():
    done = cli("ps", "-a", "--no-trunc")
    assert done.returncode == 0, done.stderr
    return [line.split()[-1] for line in done.stdout.splitlines()[1:] if line.strip()]


@pytest.mark.parametrize("argv, verb", [
    (["run", "--bogus", "busybox", "true"], "run"),
    (["create", "--bogus", "busybox"], "create"),
    (["ps", "--bogus"], "ps"),
    (["image", "inspect", "--bogus", "busybox"], "image inspect"),
])
def test_an_unknown_flag_exits_125_with_the_verbs_usage(argv, verb):
    done = cli(*argv)
    assert done.returncode == 125, done.stderr
    assert done.stdout == ""
    assert f"usage: ctrkernel {verb}" in done.stderr
    assert f"ctrkernel {verb}: error: unrecognized arguments: --bogus" in done.stderr


def test_a_malformed_or_missing_flag_value_exits_125():
    done = cli("stop", "-t", "soon", "x")
    assert done.returncode == 125
    assert "argument -t/--time: invalid float value: 'soon'" in done.stderr
    done = cli("rm")
    assert done.returncode == 125 and "the following arguments are required" in done.stderr


def test_help_still_exits_0_and_an_unknown_verb_stays_argparse_s():
    assert cli("run", "--help").returncode == 0
    done = cli("frobnicate")
    assert done.returncode == 2 and "invalid choice: 'frobnicate'" in done.stderr


def test_run_and_create_of_a_missing_image_exit_125_other_verbs_1():
    for verb in ("run", "create"):
        done = cli(verb, "no-such-image-here:1")
        assert done.returncode == 125, (verb, done.stderr)
        assert "no such image: no-such-image-here:1" in done.stderr
    done = cli("tag", "no-such-image-here:1", "x:1")
    assert done.returncode == 1 and "no such image" in done.stderr


def test_run_and_create_with_a_name_in_use_exit_125_and_leave_the_first():
    made = cli("create", "--name", "exitcodes-taken", "busybox", "true")
    assert made.returncode == 0, made.stderr
    try:
        for verb in ("run", "create"):
            done = cli(verb, "--name", "exitcodes-taken", "busybox", "true")
            assert done.returncode == 125, (verb, done.stderr)
            assert 'the container name "exitcodes-taken" is already in use' in done.stderr
        assert names_in_ps().count("exitcodes-taken") == 1
    finally:
        assert cli("rm", "-f", "exitcodes-taken").returncode == 0


@pytest.mark.parametrize("argv, message", [
    (["-m", "-5m"], "invalid memory limit: '-5m' is negative"),
    (["--memory=-5m"], "invalid memory limit: '-5m' is negative"),
    (["--cpus", "-0.5"], "invalid --cpus: '-0.5' is negative"),
    (["--memory", "-1"], "invalid memory limit"),
])
def test_a_negative_looking_value_is_the_flags_value_and_refused_clearly(argv, message):
    before = names_in_ps()
    done = cli("run", *argv, "busybox", "echo", "hi")
    assert done.returncode == 125, done.stderr
    assert message in done.stderr and "expected one argument" not in done.stderr
    assert done.stdout == "" and names_in_ps() == before   # refused before any container


@runs_containers
def test_pids_limit_minus_one_is_taken_as_unlimited():
    done = cli("run", "--rm", "--pids-limit", "-1", "busybox", "echo", "hi")
    assert done.returncode == 0 and done.stdout == "hi\n", done.stderr


@pytest.fixture(scope="module")
def entrypoint_image(tmp_path_factory):
    """busybox whose entrypoint prints a marker and exits 3: easy to tell apart from a clear."""
    context = tmp_path_factory.mktemp("entrypoint")
    (context / "Dockerfile").write_text(
        'FROM busybox\nENTRYPOINT ["/bin/sh", "-c", "echo from-entrypoint; exit 3"]\n')
    built = cli("build", "-q", "-t", "exitcodes-entry:1", str(context))
    assert built.returncode == 0, built.stderr
    yield "exitcodes-entry:1"
    cli("rmi", "-f", "exitcodes-entry:1")


@runs_containers
def test_an_empty_entrypoint_clears_the_images(entrypoint_image):
    kept = cli("run", "--rm", entrypoint_image, "echo", "hi")
    assert kept.returncode == 3 and kept.stdout == "from-entrypoint\n"
    cleared = cli("run", "--rm", "--entrypoint", "", entrypoint_image, "echo", "hi")
    assert cleared.returncode == 0, cleared.stderr
    assert cleared.stdout == "hi\n"
    cleared = cli("run", "--rm", "--entrypoint=", entrypoint_image)   # nothing left to run
    assert cleared.returncode == 125 and "no command specified" in cleared.stderr


def closed_pipe():
    """A pipe whose reader is already gone: the first write to it fails with EPIPE."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    return write_end


def test_a_reader_that_goes_away_ends_the_command_quietly_with_141():
    write_end = closed_pipe()
    try:
        done = cli("history", "busybox", stdout=write_end)
    finally:
        os.close(write_end)
    assert done.returncode == 141
    assert done.stderr == ""   # no BrokenPipeError traceback, no "Exception ignored"


def test_history_into_head_prints_one_line_and_no_traceback():
    done = subprocess.run(f"{sys.executable} -m ctrkernel history busybox | head -1", shell=True,
                          capture_output=True, text=True, timeout=300)
    assert done.stdout.split()[:2] == ["IMAGE", "CREATED"] and len(done.stdout.splitlines()) == 1
    assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr


@runs_containers
def test_a_foreground_run_whose_reader_goes_away_stops_its_container():
    write_end = closed_pipe()
    try:
        done = cli("run", "--rm", "--name", "exitcodes-pipe", "busybox", "sh", "-c",
                   "while true; do echo y; sleep 0.1; done", stdout=write_end)
    finally:
        os.close(write_end)
    assert done.returncode == 141 and "Traceback" not in done.stderr
    assert "exitcodes-pipe" not in names_in_ps()   # stopped, and --rm removed it
