"""Build an image from a Dockerfile, one step at a time, with Docker's build cache.

    from ctrkernel.image.build import build, Builder
    image, log = build("ctx/", tag="web:1")          # docker-py's shape: (image, log lines)
    for line in Builder("ctx/", tag="web:1"):        # or watch it happen, line by line
        print(line)                                   # Step 1/5 : FROM busybox / ---> 1a2b3c...

How a step becomes an image (what `docker build` does, without BuildKit):
- FROM loads the base image's config and layers (or nothing, for `scratch`);
- ENV, ARG, WORKDIR, USER, CMD, ENTRYPOINT, LABEL, EXPOSE, VOLUME only change the config and add
  a history entry marked `empty_layer`;
- COPY and ADD copy files from the build context into a fresh layer;
- RUN starts a real container from the image so far and commits what the command wrote (the
  container's writable layer) as a new layer.

Each step's result is stored as an untagged *intermediate* image (listed by `images -a`, as
Docker's classic builder keeps them); a RUN step starts its container from the one before it.

The cache. Every step has a key: the digest of (the key of the step before, the instruction as it
will be recorded, i.e. after ARG/ENV substitution and with the content digest of copied files).
The first step's key is the base image's id. A key seen before maps (a small file under
<store>/build-cache) to the intermediate image that step produced, so an unchanged Dockerfile
rebuilds without running or copying anything, and a change on line 5 reuses steps 1-4 and redoes
the rest, as Docker does. Removing those images (rmi, prune) empties the cache with them.

Nothing is tagged until the last step succeeded, so an interrupted or failed build leaves no
image visible under its name; what it stored (blobs, intermediate images, cache entries) is
content-addressed and written atomically under the store's locks, which also keeps two
concurrent builds into one store consistent.
"""
import copy
import glob
import hashlib
import json
import os
import shutil
import stat
import tarfile
import tempfile
from datetime import datetime, timezone
from pathlib import Path

from ctrkernel.errors import BuildError, CtrkernelError, HostLacks, ImageNotFound
from ctrkernel.image import default_store, get_image, refs
from ctrkernel.image import dockerfile as df
from ctrkernel.image.commit import container_layer
from ctrkernel.image.extract import apply_layer
from ctrkernel.image.image import host_architecture, store_image
from ctrkernel.image.layers import layer_from_dir

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Docker's predefined build arguments: usable without an ARG line.
PREDEFINED_ARGS = ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "FTP_PROXY",
                   "ftp_proxy", "NO_PROXY", "no_proxy")


def build(path, tag=None, dockerfile="Dockerfile", buildargs=None, nocache=False, store=None,
          created=None, labels=None):
    """Build and return (image, log lines), as docker-py's `images.build` does."""
    builder = Builder(path, tag=tag, dockerfile=dockerfile, buildargs=buildargs,
                      nocache=nocache, store=store, created=created, labels=labels)
    log = list(builder)
    return builder.image, log


def short(digest):
    return digest.split(":", 1)[-1][:12]


class _State:
    """The image being built: its config, its layer descriptors, the cache key so far, and the
    stored (intermediate) image once the step's result is saved (None for `FROM scratch`)."""

    def __init__(self, config, layers, key, image=None):
        self.config, self.layers, self.key, self.image = config, layers, key, image

    @classmethod
    def of(cls, image, key):
        return cls(copy.deepcopy(image.config), image.layers, key, image)


class Builder:
    """Iterate over it to run the build; the image is then `.image` (None until it succeeded).

    `created` (datetime, or seconds since the epoch) fixes the history timestamps, so that a
    --no-cache rebuild gives the same digests (SOURCE_DATE_EPOCH in the environment does the
    same, as for BuildKit); otherwise steps are stamped with the time they ran.

    `labels` ({name: value}, `build --label`) are added by one last LABEL step, as Docker's
    classic builder appends them to the Dockerfile: taken literally (no $ substitution).
    """

    def __init__(self, path, tag=None, dockerfile="Dockerfile", buildargs=None, nocache=False,
                 store=None, created=None, labels=None):
        self.context = Path(path).resolve()
        if not self.context.is_dir():
            raise BuildError(f"build context {path} is not a directory")
        file = Path(dockerfile)
        self.dockerfile = file if file.is_absolute() else self.context / file
        if not self.dockerfile.is_file():
            raise BuildError(f"cannot find {dockerfile} in the build context {self.context}")
        self.tag, self.nocache = tag, nocache
        self.buildargs = dict(buildargs or {})
        self.labels = dict(labels or {})
        self.store = store or default_store()
        if created is None and os.environ.get("SOURCE_DATE_EPOCH"):
            created = int(os.environ["SOURCE_DATE_EPOCH"])
        if isinstance(created, (int, float)):
            created = datetime.fromtimestamp(created, timezone.utc)
        self.created = created
        self.image = None
        self.log = []
        self.ignore = _IgnoreRules(self.context / ".dockerignore")
        # Parsed now, so that a malformed Dockerfile fails before anything runs.
        self.instructions = df.parse(self.dockerfile.read_text(), path=str(dockerfile))

    # -- the stream -----------------------------------------------------------------------------

    def __iter__(self):
        return self._run()

    def _emit(self, line):
        self.log.append(line)
        return line

    def _run(self):
        total = len(self.instructions) + (1 if self.labels else 0)
        state, args, used_args, before_from = None, {}, set(), {}
        for number, ins in enumerate(self.instructions, 1):
            yield self._emit(f"Step {number}/{total} : {ins.keyword} {ins.value}")
            try:
                if ins.keyword == "ARG":
                    for name, default in df.arg_pairs(ins, self._env(state, args)):
                        if default is None:  # `ARG NAME` again after FROM keeps the value
                            default = before_from.get(name)
                        args[name] = self.buildargs.get(name, default)
                        used_args.add(name)
                    if state is None:
                        continue  # an ARG before FROM only parameterises FROM
                if ins.keyword == "FROM":
                    state = yield from self._from(ins, args)
                    # Docker: ARGs before FROM must be declared again to be used after it.
                    before_from, args = args, {}
                    continue
                state = yield from self._step(state, ins, args)
            except BuildError as e:
                e.line = e.line or ins.line
                e.build_log = list(self.log)
                if e.line and not str(e).startswith("Dockerfile line"):
                    e.args = (f"Dockerfile line {e.line}: {e.reason}",)
                raise
            except HostLacks as e:
                raise BuildError(f"{ins.keyword} cannot run here: {e}", self.log,
                                 line=ins.line) from e
            except CtrkernelError as e:
                raise BuildError(f"{ins.keyword} failed: {e}", self.log, line=ins.line) from e
        if self.labels and state is not None:
            state = yield from self._label_step(state, total)
        unused = set(self.buildargs) - used_args - set(PREDEFINED_ARGS)
        if unused:
            yield self._emit(f"[Warning] One or more build-args {sorted(unused)} were not consumed")
        self.image = self._commit(state)
        yield self._emit(f"Successfully built {short(self.image.id)}")
        if self.tag:
            yield self._emit(f"Successfully tagged {refs.normalize(self.tag)}")

    def _commit(self, state):
        """Register the final image, tagged: the only step that names an image (the last
        intermediate image becomes it, since it has the same config and layers)."""
        if state is None:
            raise BuildError("the Dockerfile has no FROM")
        tags = [self.tag] if self.tag else []
        return store_image(self.store, state.config, state.layers, tags=tags, intermediate=False)

    # -- steps -----------------------------------------------------------------------------------

    def _env(self, state, args):
        """The variables a substitution sees: build args, then the image's ENV over them."""
        env = {k: v for k, v in args.items() if v is not None}
        if state is not None:
            for item in state.config.get("config", {}).get("Env") or []:
                k, _, v = item.partition("=")
                env[k] = v
        return env

    def _from(self, ins, args):
        ref = df.substitute(ins.value, {k: v for k, v in args.items() if v is not None}, ins.line)
        if ref == "scratch":
            config = {"architecture": host_architecture(), "os": "linux",
                      "config": {"Env": [f"PATH={DEFAULT_PATH}"]},
                      "rootfs": {"type": "layers", "diff_ids": []}, "history": []}
            state = _State(config, [], _key("scratch"))
            yield self._emit(" ---> (scratch: an empty filesystem)")
            return state
        base = get_image(ref, store=self.store)  # raises ImageNotFound (a CtrkernelError)
        state = _State.of(base, base.id)
        yield self._emit(f" ---> {short(base.id)}")
        return state

    def _label_step(self, state, number):
        """The --label step: recorded and cached as a LABEL line with these pairs would be."""
        text = " ".join(f"{k}={json.dumps(v) if ' ' in v or not v else v}"
                        for k, v in sorted(self.labels.items()))
        yield self._emit(f"Step {number}/{number} : LABEL {text}")

        def apply():
            new = _State(copy.deepcopy(state.config), list(state.layers), None)
            new.config.setdefault("config", {}).setdefault("Labels", {}).update(self.labels)
            return new
            yield  # a generator, as the other steps' work is
        return (yield from self._cached_step(state, f"/bin/sh -c #(nop)  LABEL {text}", apply))

    def _step(self, state, ins, args):
        env = self._env(state, args)
        created_by, work = self._describe(state, ins, args, env)
        return (yield from self._cached_step(state, created_by, work))

    def _cached_step(self, state, created_by, work):
        """The step's image from the cache, or made by work() and stored as an intermediate."""
        key = _key(state.key, created_by)
        cached = None if self.nocache else _cache_get(self.store, key)
        if cached is not None:
            new = _State.of(cached, key)
            yield self._emit(" ---> Using cache")
        else:
            new = yield from work()
            new.key = key
            self._history(new, created_by, empty=new.layers == state.layers)
            new.image = store_image(self.store, new.config, new.layers, intermediate=True,
                                    parent=state.image)
            _cache_put(self.store, key, new.image)
        yield self._emit(f" ---> {short(new.image.id)}")
        return new

    def _history(self, state, created_by, empty):
        when = (self.created or datetime.now(timezone.utc)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        entry = {"created": when, "created_by": created_by}
        if empty:
            entry["empty_layer"] = True
        state.config.setdefault("history", []).append(entry)
        state.config["created"] = when

    def _describe(self, state, ins, args, env):
        """(what the history records, a function doing the step): the record is the cache key."""
        kw = ins.keyword
        nop = "/bin/sh -c #(nop) "
        if kw == "RUN":
            command = ins.exec_form()
            shell = state.config.get("config", {}).get("Shell") or ["/bin/sh", "-c"]
            argv = command if command is not None else shell + [ins.value]
            build_env = {k: v for k, v in args.items() if v is not None}
            # Docker records the build args a RUN saw ("|1 NAME=v /bin/sh -c ..."): they change
            # its result, so they belong in the cache key.
            prefix = (f"|{len(build_env)} " + " ".join(f"{k}={v}" for k, v in sorted(build_env.items()))
                      + " ") if build_env else ""
            created_by = prefix + " ".join(argv)
            return created_by, lambda: self._run_step(state, ins, argv, build_env)
        if kw in ("COPY", "ADD"):
            sources, dest, chown = df.copy_args(ins, env)
            files = self._sources(sources, ins)
            digest = _content_digest(files, kw == "ADD", self._ignored)
            kind = "dir" if len(files) != 1 or files[0][1].is_dir() else "file"
            owner = f"--chown={chown[0]}:{chown[1]} " if chown else ""
            created_by = f"{nop}{kw} {owner}{kind}:{digest} in {dest} "
            return created_by, lambda: self._copy_step(state, ins, files, dest, chown)
        config_change = self._config_change(state, ins, env)
        text = _record(state, ins, env)
        created_by = f"{nop} {kw} {text}"

        def apply():
            new = _State(copy.deepcopy(state.config), list(state.layers), None)
            config_change(new.config.setdefault("config", {}))
            if kw == "WORKDIR":
                yield from self._ensure_dir(new, new.config["config"]["WorkingDir"])
            return new
        return created_by, apply

    def _config_change(self, state, ins, env):
        """A function editing the image config's `config` section as the instruction says."""
        kw = ins.keyword
        if kw == "ENV":
            pairs = df.key_values(ins, env)

            def change(c):
                current = list(c.get("Env") or [])
                for k, v in pairs:  # a variable set again keeps its place, as in Docker
                    names = [e.partition("=")[0] for e in current]
                    if k in names:
                        current[names.index(k)] = f"{k}={v}"
                    else:
                        current.append(f"{k}={v}")
                c["Env"] = current
            return change
        if kw == "LABEL":
            pairs = df.key_values(ins, env)
            return lambda c: c.setdefault("Labels", {}).update(dict(pairs))
        if kw == "MAINTAINER":
            return lambda c: None
        if kw == "ARG":
            return lambda c: None
        if kw == "WORKDIR":
            path = df.substitute(ins.value, env, ins.line)

            def change(c):
                c["WorkingDir"] = os.path.normpath(os.path.join(c.get("WorkingDir") or "/", path))
            return change
        if kw == "USER":
            user = df.substitute(ins.value, env, ins.line)
            return lambda c: c.__setitem__("User", user)
        if kw in ("CMD", "ENTRYPOINT", "SHELL"):
            form = ins.exec_form()
            if kw == "SHELL" and form is None:
                raise BuildError("SHELL needs the JSON (exec) form", line=ins.line)
            argv = form if form is not None else (state.config.get("config", {}).get("Shell")
                                                  or ["/bin/sh", "-c"]) + [ins.value]
            name = {"CMD": "Cmd", "ENTRYPOINT": "Entrypoint", "SHELL": "Shell"}[kw]
            # Docker: ENTRYPOINT resets a CMD inherited from the base image (it was meant for
            # another entrypoint), but keeps one this Dockerfile set before it. There is one
            # stage, so "before it" is any earlier CMD line.
            reset_cmd = kw == "ENTRYPOINT" and not any(
                i.keyword == "CMD" and i.line < ins.line for i in self.instructions)

            def change(c):
                c[name] = argv
                if reset_cmd:
                    c.pop("Cmd", None)
            return change
        if kw == "EXPOSE":
            ports = [p if "/" in p else p + "/tcp" for p in df.words(ins.value, env, ins.line)]
            return lambda c: c.setdefault("ExposedPorts", {}).update({p: {} for p in ports})
        if kw == "VOLUME":
            form = ins.exec_form()
            vols = form if form is not None else df.words(ins.value, env, ins.line)
            return lambda c: c.setdefault("Volumes", {}).update({v: {} for v in vols})
        if kw == "STOPSIGNAL":
            sig = df.substitute(ins.value, env, ins.line)
            return lambda c: c.__setitem__("StopSignal", sig)
        raise BuildError(f"{kw} is not handled", line=ins.line)  # parse() keeps this unreachable

    # -- steps that make layers -----------------------------------------------------------------

    def _sources(self, patterns, ins):
        """[(name as written, Path)] of the context files a COPY names; refuses escapes."""
        found = []
        for pattern in patterns:
            if "://" in pattern:
                raise BuildError(f"{ins.keyword} {pattern}: remote sources are not supported "
                                 "(ctrkernel builds without network)", line=ins.line)
            candidates = sorted(glob.glob(str(self.context / pattern.lstrip("/"))))
            if not candidates:
                raise BuildError(f"{ins.keyword} failed: {pattern!r} not found in the build "
                                 "context", line=ins.line)
            candidates = [c for c in candidates if not self._ignored(Path(c))]
            if not candidates:
                raise BuildError(f"{ins.keyword} failed: {pattern!r} is excluded by "
                                 ".dockerignore", line=ins.line)
            for candidate in candidates:
                real = Path(os.path.realpath(candidate))
                if real != self.context and self.context not in real.parents:
                    raise BuildError(f"{ins.keyword} {pattern!r}: forbidden path outside the "
                                     f"build context ({real})", line=ins.line)
                found.append((pattern, real))
        return found

    def _ignored(self, path):
        """Is this context path excluded by .dockerignore?"""
        try:
            rel = Path(os.path.abspath(path)).relative_to(self.context).as_posix()
        except ValueError:
            return False
        return self.ignore.excludes(rel)

    def _copy_ignore(self, directory, names):
        return [n for n in names if self._ignored(Path(directory) / n)]

    def _copy_step(self, state, ins, files, dest, chown):
        workdir = state.config.get("config", {}).get("WorkingDir") or "/"
        target = os.path.normpath(os.path.join(workdir, dest)).lstrip("/")
        many = len(files) > 1 or any(f.is_dir() for _, f in files)
        if len(files) > 1 and not dest.endswith("/"):
            raise BuildError(f"{ins.keyword} with more than one source needs a destination "
                             "ending in /", line=ins.line)
        stage = Path(tempfile.mkdtemp(prefix="build-copy-", dir=self.store.tmp))
        try:
            root = stage / "root"
            root.mkdir()
            for _, src in files:
                into_dir = dest.endswith("/") or many
                dst = root / target / src.name if into_dir and not src.is_dir() else root / target
                if ins.keyword == "ADD" and src.is_file() and tarfile.is_tarfile(src):
                    (root / target).mkdir(parents=True, exist_ok=True)
                    apply_layer(src, root / target)  # the one tar-safety check: extract.py
                elif src.is_dir():
                    shutil.copytree(src, dst, symlinks=True, dirs_exist_ok=True,
                                    ignore=self._copy_ignore)
                else:
                    dst.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(src, dst, follow_symlinks=True)
            # Docker: copied files belong to root unless --chown says otherwise (the layer
            # records the owner; the staging copy, maybe made without privilege, need not).
            layer = self._layer(layer_from_dir(self.store, root, owner=chown or (0, 0)))
        finally:
            shutil.rmtree(stage, ignore_errors=True)
        yield from ()
        return _State(_with_layer(state.config, layer), state.layers + [layer], None)

    def _layer(self, layer):
        """A new layer's descriptor for the state (its uncompressed size noted for `images`)."""
        self.store.record_tar_size(layer.diff_id, layer.tar_size)
        return dict(layer.descriptor(), diff_id=layer.diff_id)

    def _ensure_dir(self, state, path):
        """WORKDIR creates a missing directory (in a small layer), as Docker does."""
        if path == "/" or _path_exists(self.store, state, path):
            return
        stage = Path(tempfile.mkdtemp(prefix="build-dir-", dir=self.store.tmp))
        try:
            (stage / path.lstrip("/")).mkdir(parents=True)
            layer = self._layer(layer_from_dir(self.store, stage, owner=(0, 0)))
        finally:
            shutil.rmtree(stage, ignore_errors=True)
        state.config = _with_layer(state.config, layer)
        state.layers.append(layer)
        yield from ()

    def _run_step(self, state, ins, argv, build_env):
        if not state.layers:
            raise BuildError("RUN needs a filesystem with the command in it, and this image is "
                             "empty (FROM scratch with nothing copied yet)", line=ins.line)
        run = _run_and_commit(self.store, state.image, argv, build_env)
        container = None
        try:
            while True:
                line = next(run)
                if container is None and line.startswith(" ---> Running in "):
                    container = line.split()[-1]
                yield self._emit(line)
        except StopIteration as done:
            result = done.value
        yield self._emit(f"Removing intermediate container {container}")
        if result.status != 0:
            error = BuildError(f"The command '{' '.join(argv)}' returned a non-zero code: "
                               f"{result.status}", self.log, line=ins.line)
            error.exit_code = result.status
            raise error
        if result.layer is None:  # the command changed nothing: Docker still records the step
            return _State(copy.deepcopy(state.config), list(state.layers), None)
        layer = self._layer(result.layer)
        return _State(_with_layer(state.config, layer), state.layers + [layer], None)


class _RunResult:
    def __init__(self, status, layer):
        self.status, self.layer = status, layer


def _run_and_commit(store, image, argv, env):
    """Run argv in a container of image (no network, as a build step) and commit what it wrote.

    A generator: it yields Docker's " ---> Running in <id>" line, then the command's output line
    by line while it runs (so a long RUN shows progress), then returns a _RunResult.
    """
    from ctrkernel.runtime import create

    container = create(image, argv, env=env, network="none")
    try:
        yield f" ---> Running in {container.id[:12]}"
        container.start()
        pending = b""
        for chunk in container.logs(stdout=True, stderr=True, follow=True):
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                yield line.decode(errors="replace")
        if pending:
            yield pending.decode(errors="replace")
        status = container.wait()["StatusCode"]
        layer = container_layer(container, store) if status == 0 else None
        return _RunResult(status, layer)
    finally:
        container.remove(force=True)


# ---- the build cache: step key -> the intermediate image that step made

def _cache_path(store, key):
    directory = store.root / "build-cache"
    directory.mkdir(exist_ok=True)
    return directory / key.split(":")[-1]


def _cache_get(store, key):
    """The intermediate image a step with this key made before, if it is still in the store."""
    try:
        digest = _cache_path(store, key).read_text().strip()
        return store.get("cache@" + digest)
    except (FileNotFoundError, ImageNotFound):
        return None  # never built, or removed (rmi, prune): the step must run again


def _cache_put(store, key, image):
    path = _cache_path(store, key)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(image.manifest_digest)
    os.replace(tmp, path)  # atomic: a concurrent build sees the old entry or this one


def _path_exists(store, state, path):
    """Whether some layer of the state holds path (WORKDIR creates it when none does)."""
    rel = path.strip("/")
    diff_ids = state.config.get("rootfs", {}).get("diff_ids", [])
    return any(os.path.lexists(store.layer_dir(desc, diff_id) / rel)
               for desc, diff_id in zip(state.layers, diff_ids))


def _record(state, ins, env):
    """A metadata step as the history records it: after substitution, in a canonical form, so
    that equal meaning gives an equal record (and so an equal cache key)."""
    kw = ins.keyword
    form = ins.exec_form() if kw in df.EXEC_FORM else None
    if kw in ("CMD", "ENTRYPOINT", "SHELL"):
        shell = state.config.get("config", {}).get("Shell") or ["/bin/sh", "-c"]
        return json.dumps(form if form is not None else shell + [ins.value])
    if kw in ("ENV", "LABEL"):
        return " ".join(f"{k}={json.dumps(v) if ' ' in v or not v else v}"
                        for k, v in df.key_values(ins, env))
    if kw == "ARG":
        return " ".join(f"{k}={v}" if v is not None else k for k, v in df.arg_pairs(ins, env))
    if form is not None:
        return json.dumps([df.substitute(w, env, ins.line) for w in form])
    return " ".join(df.words(ins.value, env, ins.line))


def _with_layer(config, layer):
    new = copy.deepcopy(config)
    new.setdefault("rootfs", {"type": "layers", "diff_ids": []})["diff_ids"].append(layer["diff_id"])
    return new


def _key(*parts):
    return "sha256:" + hashlib.sha256("\n".join(parts).encode()).hexdigest()


class _IgnoreRules:
    """`.dockerignore`: one pattern a line (`*`, `?`, `**`), `#` comments, `!` re-includes; the
    last matching line decides, and excluding a directory excludes what is below it."""

    def __init__(self, path):
        import re

        self.rules = []
        try:
            lines = Path(path).read_text().splitlines()
        except FileNotFoundError:
            return
        for line in lines:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            keep = line.startswith("!")
            pattern = os.path.normpath(line.lstrip("!").strip()).lstrip("/")
            regex = ""
            i = 0
            while i < len(pattern):
                if pattern.startswith("**", i):
                    regex += ".*"
                    i += 2
                    if pattern.startswith("/", i):
                        regex += "/?"  # "**/x" also matches "x"
                        i += 1
                    continue
                ch = pattern[i]
                regex += "[^/]*" if ch == "*" else "[^/]" if ch == "?" else re.escape(ch)
                i += 1
            self.rules.append((re.compile(regex + "$"), keep))

    def excludes(self, rel):
        parts = rel.split("/")
        prefixes = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
        excluded = False
        for regex, keep in self.rules:
            if any(regex.match(p) for p in prefixes):
                excluded = not keep
        return excluded


def _content_digest(files, unpack, ignored=lambda path: False):
    """One digest over the copied files' names, modes, link targets and contents.

    Times and owners are left out on purpose: a `git clone` or a `touch` must not invalidate
    the cache (Docker's rule too); contents and permissions do.
    """
    h = hashlib.sha256()
    h.update(b"add-unpacks" if unpack else b"copy")
    for written, top in files:
        entries = [top] + (sorted(p for p in top.rglob("*") if not ignored(p))
                           if top.is_dir() else [])
        for p in entries:
            rel = p.relative_to(top.parent).as_posix()
            st = os.lstat(p)
            h.update(f"\0{written}\0{rel}\0{stat.S_IMODE(st.st_mode):o}\0".encode())
            if stat.S_ISLNK(st.st_mode):
                h.update(os.readlink(p).encode())
            elif stat.S_ISREG(st.st_mode):
                with open(p, "rb") as f:
                    for chunk in iter(lambda: f.read(1 << 20), b""):
                        h.update(chunk)
    return h.hexdigest()
