"""Every error ctrkernel raises on purpose.

One root (`CtrkernelError`: catch it to catch everything), then errors that carry the data a
user needs to act on them, in the manner of docker-py's `errors.py`. The command line maps them
to Docker's exit conventions through `exit_status`.
"""


class CtrkernelError(Exception):
    """Root of every ctrkernel error. The command line exits 125 for it, as `docker` does."""

    exit_status = 125


class CtrkernelWarning(UserWarning):
    """Something was done less fully than asked, because the host allows no more (the call
    still succeeded): shown in a notebook, printed as "WARNING: ..." by the command line."""


class HostLacks(CtrkernelError):
    """The host does not allow something a call needs.

    `feature` is what was asked for, `missing` names what the host lacks (a probe check from
    `ctrkernel.doctor()`), and `remedy` says what the user can do about it.
    """

    def __init__(self, feature, missing, remedy=""):
        self.feature, self.missing, self.remedy = feature, missing, remedy
        message = f"{feature} needs {missing}, which this host does not allow"
        if remedy:
            message += f". {remedy}"
        super().__init__(message)


class OptionalDependencyMissing(CtrkernelError, ImportError):
    """A Python package from an optional extra is not installed (papermill's message style)."""

    def __init__(self, package, extra, purpose=""):
        self.package, self.extra = package, extra
        why = f" for {purpose}" if purpose else ""
        super().__init__(
            f"{package} is needed{why}; install it with: pip install 'ctrkernel[{extra}]'"
        )


class InvalidArgument(CtrkernelError, ValueError):
    """A value given by the user cannot be used (a malformed size, a negative limit...)."""


class NotFound(CtrkernelError, LookupError):
    """Something named by the user does not exist."""

    exit_status = 1


class ImageNotFound(NotFound):
    def __init__(self, reference, hint=""):
        self.reference = reference
        message = f"no such image: {reference}"
        super().__init__(message + (f" ({hint})" if hint else ""))


class ContainerNotFound(NotFound):
    def __init__(self, name):
        self.name = name
        super().__init__(f"no such container: {name}")


class Conflict(CtrkernelError):
    """The request conflicts with the current state (a name in use, a running container...)."""

    exit_status = 1


class CommandNotFound(CtrkernelError):
    """The container's command does not exist in its filesystem (Docker exits 127)."""

    exit_status = 127

    def __init__(self, command, detail=""):
        self.command = command
        super().__init__(f"exec: {command!r}: executable file not found" + (f": {detail}" if detail else ""))


class CommandNotInvocable(CtrkernelError):
    """The container's command exists but cannot be executed (Docker exits 126)."""

    exit_status = 126

    def __init__(self, command, detail=""):
        self.command = command
        super().__init__(f"exec: {command!r}: permission denied" + (f": {detail}" if detail else ""))


class ContainerError(CtrkernelError):
    """A container exited with a non-zero status where success was expected (docker-py's)."""

    def __init__(self, container, exit_status, command, image, stderr):
        self.container, self.exit_status, self.command = container, exit_status, command
        self.image, self.stderr = image, stderr
        err = f": {stderr.strip()}" if stderr else ""
        super().__init__(
            f"command {command!r} in image {image!r} returned non-zero exit status {exit_status}{err}"
        )


class LayerError(CtrkernelError):
    """A layer tar is refused: it would write outside its root, or it is malformed."""

    def __init__(self, entry, reason):
        self.entry, self.reason = entry, reason
        super().__init__(f"layer entry {entry!r} refused: {reason}")


class DigestMismatch(CtrkernelError):
    """Content does not hash to the digest that names it."""

    def __init__(self, what, expected, actual):
        self.what, self.expected, self.actual = what, expected, actual
        super().__init__(f"{what}: digest mismatch: expected {expected}, got {actual}")


class BuildError(CtrkernelError):
    """A build failed. `line` is the Dockerfile line (1-based) where known."""

    exit_status = 1  # `docker build` exits 1 when a step fails

    def __init__(self, reason, build_log=(), line=None):
        self.reason, self.build_log, self.line = reason, list(build_log), line
        where = f"Dockerfile line {line}: " if line else ""
        super().__init__(where + reason)


class VMError(CtrkernelError):
    """A virtual machine failed to boot, timed out, or misbehaved."""

    def __init__(self, message, console=""):
        self.console = console
        super().__init__(message)


class ArchiveError(CtrkernelError):
    """An image archive (`docker save` or OCI archive) is refused: a member name escapes the
    archive, a blob it names is missing, or its JSON is malformed. `member` names what is wrong."""

    def __init__(self, member, reason):
        self.member, self.reason = member, reason
        super().__init__(f"image archive: {member!r} refused: {reason}")
