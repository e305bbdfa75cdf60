"""A sandbox for model-written code: STOP's programs and improvers (Zelikman et al. 2023, Sec. 6-7) and
HumanEval completions (analogical prompting) are run, never trusted.

``run_program(source, entry, calls)`` runs ``source`` in a fresh Python process in a temporary
working directory that is deleted afterwards, with a clean environment (no secrets), and:

- **isolation by the operating system** (:mod:`tenfold.sandbox.namespaces`): new user, mount, PID,
  network, IPC and UTS namespaces through bubblewrap; the program sees a read-only Python with numpy,
  its own work dir, a private ``/tmp`` and nothing else of the machine, and has no network at all;
  a seccomp filter (libseccomp, through pyseccomp) refuses new processes where it can be loaded.
  Where namespaces are unavailable (no ``bwrap``, no user namespaces, macOS) the sandbox falls back
  to the in-process guard alone, and says so: :func:`isolation_status`, ``SandboxResult.isolation``;
  ``isolation="namespaces"`` (or ``TENFOLD_SANDBOX=namespaces``) makes that fallback an error;
- resource limits: CPU seconds, address space, size of files written, no core dumps, processes;
  a wall-clock limit enforced from outside (the whole process group is killed);
- an audit hook (``sys.addaudithook``) that ends the process at the first forbidden action: starting
  processes, sockets and name lookups, ctypes, changing resource limits or the environment, importing
  modules that give such powers, writing outside the work dir, and (guard only) reading or listing
  outside the Python installation, numpy and the work dir. CPython's documentation says audit hooks
  are no sandbox; behind the namespaces it is a tripwire that names what the program tried;
- bounded output: stdout/stderr go to files capped by the file-size limit, and only their first
  kilobytes are read back.

Python's ``random`` and numpy's global generator are seeded (0) before the program runs, so a
program scores the same on the same inputs. Only plain data crosses the boundary: the program's
entry function is called with JSON arguments and its return values come back as JSON; scoring
happens here, outside, on data the program never saw. Statuses: ``ok``, ``error`` (the program
raised or returned non-data), ``timeout``, ``memory``, ``blocked`` (with the violation).

Circumvention accounting (STOP, Sec. 7, measured at run time): :meth:`SandboxResult.denied` counts
what the program tried and was denied, by kind (:data:`CIRCUMVENTION_KINDS`: read outside, write
outside, network, process start, resource limit, other), from the hook's records, from the
``OSError`` the program died of, and from the limits it hit. :func:`circumvention_signals` lists
static signs of an attempt in a program's text (the paper's "sandbox flag disabled" among them).
"""
from tenfold.sandbox.circumvention import CIRCUMVENTION_KINDS, FORBIDDEN_MODULES, circumvention_signals
from tenfold.sandbox.isolation import (ISOLATION_MODES, IsolationRequired, fallback_warning, isolation_status,
                                       resolve_isolation)
from tenfold.sandbox.result import STATUSES, SandboxResult
from tenfold.sandbox.run import BLOCKED_EXIT, RUNNER, Limits, run_program
from tenfold.sandbox.services import ServiceError

__all__ = ["BLOCKED_EXIT", "CIRCUMVENTION_KINDS", "FORBIDDEN_MODULES", "ISOLATION_MODES", "RUNNER", "STATUSES",
           "IsolationRequired", "Limits", "SandboxResult", "ServiceError", "circumvention_signals", "fallback_warning",
           "isolation_status", "resolve_isolation", "run_program"]
