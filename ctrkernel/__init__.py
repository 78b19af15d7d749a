"""ctrkernel: a small, real container runtime and a course on containers versus VMs.

    import ctrkernel
    ctrkernel.doctor()          # what this host allows, and the isolation level
"""
from ctrkernel.errors import CtrkernelError, CtrkernelWarning, HostLacks
from ctrkernel.host import doctor

__version__ = "0.1.0"

__all__ = ["doctor", "CtrkernelError", "CtrkernelWarning", "HostLacks", "__version__"]
