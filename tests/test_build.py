"""Dockerfile builds: every instruction, checked by running the image; the cache; errors that
name the line; ADD of a tar; COPY refusing the outside; reproducible digests; two concurrent
builds into one store.

The images start from `scratch` with the host's static busybox copied in, so the tests need no
builtin image and no network.
"""
import os
import shutil
import subprocess
import sys
import tarfile

import pytest

from conftest import requires_isolation
from ctrkernel.errors import BuildError
from ctrkernel.errors import ImageNotFound
from ctrkernel.image import Store, default_store, get_image
from ctrkernel.image.build import Builder, build

BUSYBOX = shutil.which("busybox") or "/bin/busybox"
BASE = """\
FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
ENV PATH=/usr/sbin:/usr/bin:/sbin:/bin
"""
runs_containers = requires_isolation("full", "rootless")


def blobs():
    return set(os.listdir(default_store().blobs))


def make_context(path, dockerfile, files=None):
    path.mkdir(parents=True, exist_ok=True)
    shutil.copy(BUSYBOX, path / "busybox")
    (path / "Dockerfile").write_text(dockerfile)
    for name, content in (files or {}).items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(content)
    return path


def run_image(image, command=None, **options):
    from ctrkernel.runtime import create

    c = create(image, command, **options)
    try:
        c.start()
        status = c.wait()["StatusCode"]
        return status, c.logs(stdout=True, stderr=True).decode()
    finally:
        c.remove(force=True)


@pytest.fixture
def site(tmp_path):
    tar_source = tmp_path / "payload"
    tar_source.mkdir()
    (tar_source / "readme.txt").write_text("from a tar\n")
    context = make_context(tmp_path / "ctx", BASE + """\
ARG GREETING=hello
ARG UNSET
# the ARG value reaches RUN as an environment variable, not the image
RUN echo "$GREETING from RUN" > /built.txt
ENV APP_HOME=/srv/app \\
    MODE="two words"
WORKDIR $APP_HOME
COPY index.html ./
COPY conf/ conf/
ADD payload.tar.gz /opt/
LABEL org.example.course="ctrkernel" stage=test
EXPOSE 8080 53/udp
VOLUME ["/data"]
USER 1000:1000
ENTRYPOINT ["/bin/sh", "-c"]
CMD ["id -u; pwd; echo $MODE; cat /built.txt /opt/readme.txt index.html conf/a.conf"]
""", {"index.html": "<h1>hi</h1>\n", "conf/a.conf": "a=1\n"})
    with tarfile.open(context / "payload.tar.gz", "w:gz") as tar:
        tar.add(tar_source / "readme.txt", arcname="readme.txt")
    return context


@runs_containers
def test_every_instruction_lands_in_the_image_and_the_container_sees_it(site):
    image, log = build(site, tag="site:test", buildargs={"GREETING": "bonjour"})
    cfg = image.config["config"]
    assert cfg["WorkingDir"] == "/srv/app" and cfg["User"] == "1000:1000"
    assert "MODE=two words" in cfg["Env"] and "APP_HOME=/srv/app" in cfg["Env"]
    assert not any(e.startswith("GREETING=") for e in cfg["Env"])  # ARG does not persist
    assert cfg["Labels"] == {"org.example.course": "ctrkernel", "stage": "test"}
    assert set(cfg["ExposedPorts"]) == {"8080/tcp", "53/udp"} and "/data" in cfg["Volumes"]
    assert cfg["Entrypoint"] == ["/bin/sh", "-c"] and len(cfg["Cmd"]) == 1
    history = image.config["history"]
    assert len(history) == 17  # one entry per step after FROM
    # Docker's records: metadata and COPY steps as "#(nop)", RUN as the command it ran.
    assert sum(h["created_by"].startswith("/bin/sh -c #(nop) ") for h in history) == 15
    assert any(h["created_by"].startswith("|1 GREETING=bonjour") for h in history)  # Docker's form
    assert sum(not h.get("empty_layer") for h in history) == len(image.config["rootfs"]["diff_ids"])
    assert log[0] == "Step 1/18 : FROM scratch" and log[-1] == "Successfully tagged site:test"

    status, out = run_image(image)
    assert status == 0, out
    assert out.splitlines() == ["1000", "/srv/app", "two words", "bonjour from RUN", "from a tar",
                                "<h1>hi</h1>", "a=1"]


@runs_containers
def test_an_unchanged_rebuild_is_a_cache_hit_that_stores_nothing(site):
    first, _ = build(site, tag="site:cache")
    before = blobs()
    builder = Builder(site, tag="site:cache")
    log = list(builder)
    assert builder.image.id == first.id
    assert blobs() == before  # not one new blob: no layer, no config, no manifest
    steps = [line for line in log if line.startswith("Step ")]
    assert log.count(" ---> Using cache") == len(steps) - 1  # every step after FROM
    # Changing a copied file reuses the steps above it and redoes it and those after it.
    (site / "index.html").write_text("<h1>changed</h1>\n")
    log = list(Builder(site, tag="site:cache"))
    i = log.index("Step 10/18 : COPY index.html ./")
    assert log[:i].count(" ---> Using cache") == 8 and " ---> Using cache" not in log[i:]


@runs_containers
def test_a_failing_run_names_the_line_its_exit_code_and_keeps_the_log(tmp_path):
    context = make_context(tmp_path, BASE + "RUN echo before the failure && exit 7\nCMD true\n")
    with pytest.raises(BuildError) as caught:
        list(Builder(context, tag="broken:1"))
    error = caught.value
    assert error.line == 5 and error.exit_code == 7
    assert "returned a non-zero code: 7" in str(error) and "line 5" in str(error)
    assert "before the failure" in error.build_log
    with pytest.raises(ImageNotFound):
        get_image("broken:1")  # nothing tagged for a failed build


@pytest.mark.parametrize("dockerfile, line, message", [
    (BASE + 'RUN echo hi\nCMD ["sh", "-c" "echo"\n', 6, "invalid JSON"),
    (BASE + "RUN echo hi\nWORKDIR ${A\n", 6, "bad substitution"),
    (BASE + "RUN echo hi\nUSER ${A\n", 6, "bad substitution"),
    (BASE + "RUN echo hi\nEXPOSE 80 ${P\n", 6, "bad substitution"),
    (BASE + "RUN echo hi\nSHELL /bin/bash\n", 6, "JSON (exec) form"),
    ("ARG X=scratch\nFROM ${X\nCOPY busybox /bin/busybox\n", 2, "bad substitution"),
    # A trailing continuation at the very end must not silently drop the last instruction.
    (BASE + "RUN echo hi\nRUN echo a \\", 6, "ends inside"),
    (BASE + "RUN echo hi \\\n  && echo there \\\n# only a comment follows\n", 5, "ends inside"),
], ids=["json", "workdir", "user", "expose", "shell", "from", "eof-continuation",
        "continuation-then-comment"])
def test_a_malformed_dockerfile_fails_before_any_step(tmp_path, dockerfile, line, message):
    context = make_context(tmp_path, dockerfile)
    before = blobs()
    with pytest.raises(BuildError) as caught:
        Builder(context)  # parsing happens here, before the first step could run
    assert caught.value.line == line and message in str(caught.value)
    assert f"line {line}" in str(caught.value)
    assert blobs() == before


def test_entrypoint_keeps_a_cmd_set_before_it_but_resets_an_inherited_one(tmp_path):
    """Docker's rule: ENTRYPOINT clears CMD only when CMD came from the base image."""
    parent, _ = build(make_context(tmp_path / "parent", 'FROM scratch\nCOPY busybox /bin/busybox\n'
                                   'CMD ["hello"]\nENTRYPOINT ["/bin/busybox", "echo"]\n'),
                      tag="ep-parent:1")
    assert parent.config["config"]["Cmd"] == ["hello"]
    assert parent.config["config"]["Entrypoint"] == ["/bin/busybox", "echo"]
    child, _ = build(make_context(tmp_path / "child", 'FROM ep-parent:1\n'
                                  'ENTRYPOINT ["/bin/busybox", "echo", "child"]\n'),
                     tag="ep-child:1")
    assert child.config["config"].get("Cmd") is None  # the inherited ["hello"] is gone
    from conftest import host
    if host().isolation not in ("full", "rootless"):
        return  # no containers on this host: the configs above are what Docker would store
    assert run_image(parent) == (0, "hello\n")
    assert run_image(child) == (0, "child\n")


def test_commit_changes_with_an_empty_exec_form_clear_the_setting():
    from ctrkernel.image.commit import _apply_changes

    config = {"Entrypoint": ["/bin/echo"], "Cmd": ["hi"]}
    out = _apply_changes(config, ["ENTRYPOINT []", "CMD []", "VOLUME []"])
    assert out["Entrypoint"] == [] and out["Cmd"] == [] and out.get("Volumes", {}) == {}


@pytest.mark.parametrize("source", ["../secret.txt", "link-out", "/etc/../../secret.txt"])
def test_copy_refuses_paths_outside_the_context(tmp_path, source):
    (tmp_path / "secret.txt").write_text("not for the image")
    context = make_context(tmp_path / "ctx", f"FROM scratch\nCOPY {source} /x\n")
    (context / "link-out").symlink_to(tmp_path / "secret.txt")
    with pytest.raises(BuildError) as caught:
        list(Builder(context))
    assert caught.value.line == 2
    assert "outside the build context" in str(caught.value) or "not found" in str(caught.value)


def test_add_refuses_a_tar_that_escapes(tmp_path):
    import io
    context = make_context(tmp_path / "ctx", "FROM scratch\nADD evil.tar /x/\n")
    with tarfile.open(context / "evil.tar", "w") as tar:
        info = tarfile.TarInfo("../../escaped.txt")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"bad"))
    with pytest.raises(BuildError) as caught:
        list(Builder(context))
    assert caught.value.line == 2 and "escaped.txt" in str(caught.value)
    assert not list(tmp_path.rglob("escaped.txt"))


def test_same_build_in_two_stores_gives_the_same_digests(tmp_path, monkeypatch):
    """Reproducible: no cache involved, two stores, fixed history times (SOURCE_DATE_EPOCH)."""
    context = make_context(tmp_path / "ctx", "FROM scratch\nCOPY busybox /bin/busybox\n"
                           "COPY conf /etc/conf\nENV A=1\nCMD [\"/bin/busybox\"]\n",
                           {"conf/x": "1\n"})
    ids = []
    for n in range(2):
        monkeypatch.setenv("CTRKERNEL_HOME", str(tmp_path / f"home{n}"))
        monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
        os.utime(context / "conf" / "x", (n * 1000, n * 1000))  # times must not matter
        image, _ = build(context, nocache=True)
        ids.append((image.id, [l["digest"] for l in image.layers]))
    assert ids[0] == ids[1]


@runs_containers
def test_commit_makes_the_container_changes_an_image(tmp_path):
    from ctrkernel.image.commit import commit
    from ctrkernel.runtime import create

    base, _ = build(make_context(tmp_path, BASE), tag="commit-base:1")
    c = create(base, ["sh", "-c", "echo made by hand > /note && rm /bin/vi"])
    try:
        c.start()
        assert c.wait()["StatusCode"] == 0
        image = commit(c, repository="committed", tag="v1", message="a note",
                       author="Ada", changes=['CMD ["cat", "/note"]', "ENV STAGE=committed"])
    finally:
        c.remove(force=True)
    assert len(image.layers) == len(base.layers) + 1
    assert image.config["history"][-1]["comment"] == "a note"
    assert image.config["author"] == "Ada" and "STAGE=committed" in image.config["config"]["Env"]
    status, out = run_image(image)
    assert (status, out) == (0, "made by hand\n")
    status, out = run_image(image, ["sh", "-c", "test -e /bin/vi || echo vi is gone"])
    assert out == "vi is gone\n"


@runs_containers
def test_two_concurrent_builds_into_one_store_stay_consistent(tmp_path):
    home = tmp_path / "home"
    contexts = []
    for n in range(2):
        contexts.append(make_context(tmp_path / f"ctx{n}", BASE + f"RUN echo {n} > /n\n"
                                     "COPY f /f\n", {"f": "same\n"}))
    code = ("import sys; from ctrkernel.image.build import build; "
            "print(build(sys.argv[1], tag=sys.argv[2])[0].id)")
    env = dict(os.environ, CTRKERNEL_HOME=str(home))
    procs = [subprocess.Popen([sys.executable, "-c", code, str(ctx), f"conc:{n}"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for n, ctx in enumerate(contexts)]
    results = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), results
    store = Store(home / "images")
    assert store.fsck() == []
    assert {t for img in store.images() for t in img.tags} >= {"conc:0", "conc:1"}
    for n, (out, _) in enumerate(results):
        assert store.get(f"conc:{n}").id == out.strip()
    shutil.rmtree(home / "containers", ignore_errors=True)


def test_cli_build_quiet_prints_the_id_and_a_failure_exits_1(tmp_path):
    context = make_context(tmp_path, "FROM scratch\nCOPY busybox /bin/busybox\n")
    run = [sys.executable, "-m", "ctrkernel", "build"]
    done = subprocess.run(run + ["-q", "-t", "cli:1", str(context)], capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().startswith("sha256:") and len(done.stdout.strip()) == 71
    (context / "Dockerfile.bad").write_text("FROM scratch\nNOPE\n")
    done = subprocess.run(run + ["-f", str(context / "Dockerfile.bad"), str(context)],
                          capture_output=True, text=True)
    assert done.returncode == 1 and "line 2" in done.stderr and "NOPE" in done.stderr


def test_a_binder_like_user_builds_or_is_told_why_run_cannot(unprivileged_home):
    """Unprivileged with nothing isolatable: COPY and metadata steps need no privilege; RUN
    runs where the runtime has a fallback (proot) and otherwise fails naming the line."""
    context = make_context(unprivileged_home / "ctx", BASE + "RUN echo ran > /ran\nCMD [\"cat\", \"/ran\"]\n")
    for p in [context, *context.rglob("*")]:
        os.chown(p, 1000, 1000)
    done = binder_sim_build(unprivileged_home, context)
    if done.returncode == 0:
        assert "Successfully tagged binder:1" in done.stdout
    else:
        assert done.returncode == 1 and "line 3" in done.stderr and "cannot run here" in done.stderr


def binder_sim_build(home, context):
    from conftest import binder_sim
    return binder_sim([sys.executable, "-m", "ctrkernel", "build", "-t", "binder:1", str(context)],
                      env={"CTRKERNEL_HOME": str(home / "state"), "BINDER_SIM_HOME": str(home)})


def test_an_interrupted_build_leaves_no_image_under_its_name(tmp_path):
    context = make_context(tmp_path, "FROM scratch\nCOPY busybox /bin/busybox\nENV A=1\n"
                           "COPY Dockerfile /Dockerfile\n")
    stream = iter(Builder(context, tag="interrupted:1"))
    for line in stream:
        if line.startswith("Step 3/"):
            break
    stream.close()  # what Ctrl-C in a notebook or a killed `ctrkernel build` amounts to
    with pytest.raises(ImageNotFound):
        get_image("interrupted:1")


@runs_containers
def test_cli_commit_with_a_change_and_a_message(tmp_path):
    from ctrkernel.runtime import create

    # The base has an ENTRYPOINT, which the commit clears with `-c 'ENTRYPOINT []'`.
    base, _ = build(make_context(tmp_path, BASE + 'ENTRYPOINT ["/bin/echo", "base says"]\n'),
                    tag="cli-commit-base:1")
    c = create(base, ["sh", "-c", "echo x > /x"], entrypoint=[], name="ctrkernel-test-commit")
    try:
        c.start()
        c.wait()
        done = subprocess.run([sys.executable, "-m", "ctrkernel", "commit", "-m", "by cli",
                               "-c", "ENTRYPOINT []", "-c", "CMD [\"cat\", \"/x\"]", c.name,
                               "clicommit:v2"], capture_output=True, text=True)
    finally:
        c.remove(force=True)
    assert done.returncode == 0, done.stderr
    image = get_image("clicommit:v2")
    assert image.id == done.stdout.strip()
    assert image.config["config"]["Cmd"] == ["cat", "/x"]
    assert image.config["config"]["Entrypoint"] == []
    assert image.config["history"][-1]["comment"] == "by cli"
    assert run_image(image) == (0, "x\n")  # cat runs itself, not under the old entrypoint


def test_dockerignore_keeps_files_out_of_the_layer_and_out_of_the_cache_key(tmp_path):
    from ctrkernel.lessons.images import tar_listing

    context = make_context(tmp_path, "FROM scratch\nCOPY . /src/\n",
                           {"app.py": "print(1)\n", "notes.log": "noise\n", "build/out.o": "x",
                            "docs/keep.md": "k\n", "docs/drop.md": "d\n"})
    (context / "busybox").unlink()
    (context / ".dockerignore").write_text("# comments are fine\n*.log\nbuild\ndocs/*\n"
                                           "!docs/keep.md\n")
    image, _ = build(context)
    names = {n for n, kind, _ in tar_listing(default_store().blob_path(image.layers[0]["digest"]))}
    assert {"src/app.py", "src/docs/keep.md", "src/Dockerfile"} <= names
    assert not names & {"src/notes.log", "src/build/out.o", "src/build", "src/docs/drop.md"}
    (context / "notes.log").write_text("more noise\n")  # an ignored file changes: cache holds
    log = list(Builder(context))
    assert log.count(" ---> Using cache") == 1


USER_SCRIPT = """
import sys
from ctrkernel.image.build import build
from ctrkernel.image.commit import commit
from ctrkernel.runtime import create

def run(image, command):
    c = create(image, ["sh", "-c", command])
    c.start()
    c.wait()
    return c, c.logs(stdout=True, stderr=True).decode()

image, _ = build(sys.argv[1], tag="user:1")
c, out = run(image, "echo more > /more; rm /bin/ls; ls /o")
print("kind", c.isolation["rootfs"], out.split())
committed = commit(c, repository="user-commit")
c.remove(force=True)
c, out = run(committed, "cat /hi /more; test -e /bin/ls || echo ls-gone; "
                        "test -e /bin/vi || echo vi-gone; ls /o")
c.remove(force=True)
print("committed", out.split())
"""


@pytest.mark.parametrize("userns", [True, False], ids=["rootless", "binder-like"])
def test_unprivileged_builds_and_commits_keep_deletions_and_opaque_dirs(unprivileged_home,
                                                                         userns):
    """Whiteouts and an opaque directory, made by RUN steps and by a commit, hide the lower
    layers' files for an unprivileged user too (rootless overlay, or the copy fallback)."""
    from conftest import binder_sim

    context = make_context(unprivileged_home / "ctx", BASE + "RUN echo hi > /hi && rm /bin/vi "
                           "&& mkdir /o && touch /o/a /o/b\nRUN rm -rf /o && mkdir /o && "
                           "touch /o/c\n")
    (unprivileged_home / "script.py").write_text(USER_SCRIPT)
    for p in [unprivileged_home, *unprivileged_home.rglob("*")]:
        os.chown(p, 1000, 1000)
    done = binder_sim([sys.executable, str(unprivileged_home / "script.py"), str(context)],
                      userns=userns, env={"CTRKERNEL_HOME": str(unprivileged_home / "state"),
                                          "BINDER_SIM_HOME": str(unprivileged_home)})
    if done.returncode != 0 and "cannot run here" in done.stderr:
        pytest.skip(f"no way to run a RUN step as this user here: {done.stderr[-300:]}")
    assert done.returncode == 0, done.stderr[-2000:]
    kind = next(l for l in done.stdout.splitlines() if l.startswith("kind"))
    assert kind.endswith("['c']"), kind            # /o's old a and b are hidden (opaque)
    assert "committed ['hi', 'more', 'ls-gone', 'vi-gone', 'c']" in done.stdout, done.stdout


def test_rmi_removes_the_intermediate_steps_only_that_image_needed(tmp_path):
    """Each step is an intermediate image (`images -a`); removing the image removes the steps
    no other image starts from, as `docker rmi` does, and the store is as before the builds."""
    store = Store(tmp_path / "images")
    common = "FROM scratch\nCOPY busybox /bin/busybox\nENV A=1\n"
    one = make_context(tmp_path / "one", common + "COPY one.txt /\nCMD [\"x\"]\n", {"one.txt": "1"})
    two = make_context(tmp_path / "two", common + "COPY two.txt /\n", {"two.txt": "2"})
    first, log = build(one, tag="one:1", store=store)
    second, _ = build(two, tag="two:1", store=store)
    assert len(store.images()) == 2
    steps = {img.id for img in store.images(all=True)} - {first.id, second.id}
    assert len(steps) == 3                   # COPY busybox, ENV (shared), COPY one.txt
    log = store.remove("one:1")
    assert log[:2] == [{"Untagged": "one:1"}, {"Deleted": first.id}]
    assert len(log) == 3                     # and the COPY one.txt step, not the shared ones
    assert len(store.images(all=True)) == 3 and store.fsck() == []
    assert " ---> Using cache" in list(Builder(two, tag="two:1", store=store))  # cache kept
    store.remove("two:1")
    assert store.images(all=True) == [] and list(store.blobs.iterdir()) == []
    assert list(store.parents.iterdir()) == []
