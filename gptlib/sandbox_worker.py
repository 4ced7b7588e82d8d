"""The process that runs untrusted programs: one forked, limited child per program.

Taught in notebooks/11_codex.ipynb. `gptlib.sandbox.Sandbox` starts this file as a script
(``python -s -S -B sandbox_worker.py``: standard library only, a minimal environment) and sends
it jobs, one JSON line each: a program, the name of its function, and the tests' arguments.
Python starts once per worker; each job costs one ``fork``. The child:

1. starts a new session (its own process group, so the whole group can be killed);
2. reads /dev/null as stdin; its stdout and stderr go to a pipe that the worker caps;
3. closes every other inherited file descriptor, and works in a fresh temporary folder that
   the worker deletes afterwards, with an environment of four variables the worker sets (HOME
   and TMPDIR point into the folder, PATH, LANG): none of yours;
4. gets resource limits (`resource`): CPU seconds, address space, file size, open files, no
   core dumps, and no new processes or threads (RLIMIT_NPROC 0);
5. on Linux with Landlock (5.13+, Salaün 2021): may write, create and delete files only inside
   its folder and read only the Python standard library; with Landlock ABI 4 (Linux 6.7+) no
   TCP bind or connect (UDP is not covered); with ABI 6 (6.12+) no signals and no abstract UNIX
   sockets outside the sandbox. Landlock needs no privileges. It does not govern ``connect()``
   to an existing UNIX socket by path (the session bus, the Docker socket): step 6 does;
6. runs inside namespaces that the worker entered at start (`_isolate`), where the kernel
   allows them: as root, a new network and mount namespace; as another user, first a new user
   namespace (unprivileged user namespaces), then the same. The network namespace has no
   device but a loopback that is down: no TCP, no UDP (no DNS), no abstract UNIX sockets. In
   the mount namespace empty tmpfs folders cover /tmp, /run, /var/tmp and /dev/shm, where
   most path-based UNIX sockets live (one elsewhere, say in your home folder, stays
   reachable). Where the worker may, each child also gets a new PID namespace where it is
   process 1 and sees no process outside, so ``kill(-1, SIGKILL)`` reaches nothing of yours
   (as process 1 it also ignores signals it has no handler for, even its own SIGKILL; the
   worker's SIGKILL still ends it);
7. when the worker runs as root, drops to the user ``nobody`` (root ignores RLIMIT_NPROC and
   file permissions); in a user namespace, drops the capabilities it grants;
8. defines the program's function, calls it on each test's arguments, and writes one JSON line
   per test to the result pipe: the ``repr`` of the value, or the exception.

``Sandbox.features`` reports which of these took effect (``landlock_abi``, ``user_namespace``,
``network_namespace``, ``socket_folders_hidden``, ``pid_namespace``, ``user``). The worker waits
with a wall-clock timeout, kills the process group when the time or the output cap runs out,
reaps the child and replies with what happened. It never judges: it has never seen the
expected values (see gptlib/codeeval.py for why).

**What it cannot stop.** This is a process sandbox, not a virtual machine. A program shares the
kernel with you: a kernel bug or a side channel (timing, /proc, cache) is out of its reach.
Where a protection above is missing, the gap is real; as your user (not root):

- without Landlock (macOS, Linux before 5.13) a program can read, change and delete any file
  you can;
- without a network namespace (macOS; Linux with unprivileged user namespaces switched off) it
  can send UDP (e.g. DNS queries carrying your data) even where Landlock ABI 4+ blocks TCP, and
  without Landlock ABI 4 it can open TCP connections too;
- without the mount namespace it can connect to UNIX sockets it finds by path, whatever
  Landlock says: the session bus /run/user/UID/bus (through systemd it can start commands
  outside the sandbox) or, if you are in the ``docker`` group, /var/run/docker.sock (root);
- without a PID namespace and before Landlock ABI 6 (Linux 6.12) it can signal every process
  you own: ``os.kill(-1, signal.SIGKILL)`` ends your notebook kernel and your shell;
- memory limits are not enforced on macOS.

For a class whose students hand in code, run the whole evaluation inside a container without
network (e.g. ``docker run --network none --read-only --memory 1g --pids-limit 64`` with the
repository mounted read-only), or under gVisor or nsjail; Chen et al. 2021 (§2.3) ran HumanEval
in gVisor with network access blocked by firewall rules.
"""

from __future__ import annotations

import ast
import ctypes
import functools
import json
import os
import resource
import selectors
import shutil
import signal
import stat
import sys
import sysconfig
import tempfile
import time

NOBODY = 65534
# Modules a program may import even where it cannot read the standard library's folder (running
# as nobody while Python lives in root's home): the worker imports them once, children inherit.
_PRELOADED = ("bisect", "collections", "copy", "dataclasses", "decimal", "fractions", "functools",
              "heapq", "itertools", "math", "operator", "random", "re", "socket", "statistics",
              "string", "subprocess", "typing")  # fmt: skip
_CLONE_NEWNS, _CLONE_NEWUSER, _CLONE_NEWPID, _CLONE_NEWNET = (
    0x20000,
    0x10000000,
    0x20000000,
    0x40000000,
)
_MS_NOSUID, _MS_NODEV, _MS_REC, _MS_PRIVATE = 2, 4, 1 << 14, 1 << 18
_SOCKET_FOLDERS = ("/tmp", "/run", "/var/run", "/var/tmp", "/dev/shm")
_CAPABILITY_V3 = 0x20080522
_ISOLATION = ("user_namespace", "network_namespace", "socket_folders_hidden")
_PR_SET_PDEATHSIG, _PR_SET_NO_NEW_PRIVS = 1, 38
_LANDLOCK_CREATE, _LANDLOCK_ADD_RULE, _LANDLOCK_RESTRICT = 444, 445, 446  # same on every arch
# Landlock access rights by the ABI that introduced them (linux/landlock.h).
_FS_ACCESS = {1: (1 << 13) - 1, 2: (1 << 14) - 1, 3: (1 << 15) - 1, 5: (1 << 16) - 1}
_FS_READ = (1 << 0) | (1 << 2) | (1 << 3)  # execute, read file, read directory
_NET_TCP = (1 << 0) | (1 << 1)  # bind, connect (ABI 4)
_SCOPES = (1 << 0) | (1 << 1)  # abstract unix sockets, signals (ABI 6)


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("fs", ctypes.c_uint64), ("net", ctypes.c_uint64), ("scoped", ctypes.c_uint64)]


class _PathBeneath(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL(None, use_errno=True) if sys.platform == "linux" else None
    except OSError:
        return None


LIBC = _libc()


def landlock_abi() -> int:
    """The Landlock ABI version this kernel offers, 0 if none (not Linux, too old, disabled)."""
    if LIBC is None:
        return 0
    return max(0, LIBC.syscall(_LANDLOCK_CREATE, None, ctypes.c_size_t(0), ctypes.c_uint32(1)))


def _landlock(abi: int, writable: str, readable: list[str]) -> None:
    """Restrict this process: full access under ``writable``, read-only under ``readable``."""
    fs = _FS_ACCESS[max(v for v in _FS_ACCESS if v <= abi)]
    attr = _RulesetAttr(fs, _NET_TCP if abi >= 4 else 0, _SCOPES if abi >= 6 else 0)
    size = ctypes.sizeof(attr) if abi >= 6 else (16 if abi >= 4 else 8)
    ruleset = LIBC.syscall(_LANDLOCK_CREATE, ctypes.byref(attr), ctypes.c_size_t(size), 0)
    if ruleset < 0:
        raise OSError(ctypes.get_errno(), "landlock_create_ruleset failed")
    for path, allowed in [(writable, fs), *((p, _FS_READ & fs) for p in readable)]:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
        rule = _PathBeneath(allowed, fd)
        if LIBC.syscall(_LANDLOCK_ADD_RULE, ruleset, 1, ctypes.byref(rule), 0) != 0:
            raise OSError(ctypes.get_errno(), f"landlock_add_rule failed for {path}")
        os.close(fd)
    if LIBC.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")
    if LIBC.syscall(_LANDLOCK_RESTRICT, ruleset, 0) != 0:
        raise OSError(ctypes.get_errno(), "landlock_restrict_self failed")
    os.close(ruleset)


def _write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def _isolate() -> dict:
    """Move this worker into new namespaces: no network, and no reachable UNIX socket by path.

    As root: a new network and mount namespace. As another user: first a new user namespace
    (unprivileged user namespaces; many distributions allow them, some switch them off) that
    maps only your own uid and gid, then the same. The network namespace has only a loopback
    device, down: no TCP, no UDP, no abstract UNIX sockets. In the mount namespace empty tmpfs
    folders cover /tmp, /run, /var/tmp and /dev/shm, where the session bus, the Docker socket
    and other path-based UNIX sockets live. Returns which of these took effect; each step falls
    back where the kernel refuses it (then the features say so). Raises OSError where the
    user namespace is made but cannot map our uid (`_isolation_works` tries it first).
    """
    done = dict.fromkeys(_ISOLATION, False)
    if LIBC is None:
        return done
    uid, gid = os.geteuid(), os.getegid()
    if uid != 0:
        if LIBC.unshare(_CLONE_NEWUSER | _CLONE_NEWNET | _CLONE_NEWNS) != 0:
            return done
        # map only ourselves: we stay your uid inside, with capabilities in the namespace
        _write("/proc/self/setgroups", "deny")
        _write("/proc/self/uid_map", f"{uid} {uid} 1")
        _write("/proc/self/gid_map", f"{gid} {gid} 1")
        done["user_namespace"] = done["network_namespace"] = True
    else:
        done["network_namespace"] = LIBC.unshare(_CLONE_NEWNET) == 0
        if LIBC.unshare(_CLONE_NEWNS) != 0:
            return done
    keep = [os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, *_readable_roots())]
    if LIBC.mount(b"none", b"/", None, _MS_REC | _MS_PRIVATE, None) != 0:
        return done  # without private propagation our mounts would leak out: mount nothing
    hidden = True
    for folder in _SOCKET_FOLDERS:
        if os.path.islink(folder) or not os.path.isdir(folder):
            continue  # /var/run is usually a link to /run
        if any(k.startswith(folder + "/") for k in keep):
            hidden = False  # Python itself lives there: covering it would break imports
            continue
        options = b"mode=1777,size=512m"
        if LIBC.mount(b"tmpfs", folder.encode(), b"tmpfs", _MS_NOSUID | _MS_NODEV, options):
            hidden = False
    done["socket_folders_hidden"] = hidden
    os.chdir("/")
    return done


def _isolation_works() -> bool:
    """Whether `_isolate` succeeds here and leaves a usable temporary folder (tried in a fork).

    Some kernels let a process make a user namespace and then refuse it everything in it (e.g.
    Ubuntu's AppArmor restriction); the worker cannot step back out, so it tries first.
    """
    if LIBC is None:
        return False
    pid = os.fork()
    if pid == 0:
        try:
            _isolate()
            os.rmdir(tempfile.mkdtemp(prefix="gptlib-sandbox-"))
        except BaseException:  # noqa: BLE001  (any failure means: do not isolate)
            os._exit(1)
        os._exit(0)
    return os.waitpid(pid, 0)[1] == 0


def _drop_capabilities() -> None:
    """Give up every capability (those a user namespace grants us), as setuid to nobody does."""
    header = (ctypes.c_uint32 * 2)(_CAPABILITY_V3, 0)
    data = (ctypes.c_uint32 * 6)()  # effective, permitted, inheritable; twice (64 bits)
    if LIBC.capset(ctypes.byref(header), ctypes.byref(data)) != 0:
        raise OSError(ctypes.get_errno(), "capset failed: could not drop capabilities")


@functools.cache
def _readable_roots() -> list[str]:
    """The standard library's folders: all a confined program may read (with Landlock)."""
    paths = {sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib")}
    paths |= {p for p in sys.path if p.endswith("lib-dynload")}
    return sorted(p for p in paths if os.path.isdir(p))


def _limit(kind: int, value: int) -> bool:
    try:
        resource.setrlimit(kind, (value, value))
        return True
    except (ValueError, OSError):  # e.g. RLIMIT_AS on macOS
        return False


def _pid_namespace_works() -> bool:
    """Whether this worker may give each child a new PID namespace (tried in a throwaway fork)."""
    if LIBC is None:
        return False
    pid = os.fork()
    if pid == 0:
        os._exit(0 if LIBC.unshare(_CLONE_NEWPID) == 0 else 1)
    return os.waitpid(pid, 0)[1] == 0


def _become_pid_namespace_init() -> None:
    """Fork once more: the program runs as process 1 of the new PID namespace; we wait for it.

    Inside, it sees no process outside its namespace, so it cannot name one to signal
    (``kill(-1, SIGKILL)`` reaches nobody). This process only waits and passes on how the
    program ended, so the worker's accounting (exit code, signal, CPU time) is unchanged.
    """
    inner = os.fork()
    if inner == 0:
        return
    LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    _, status = os.waitpid(inner, 0)
    if os.WIFSIGNALED(status):
        signal.signal(os.WTERMSIG(status), signal.SIG_DFL)
        os.kill(os.getpid(), os.WTERMSIG(status))
    os._exit(os.WEXITSTATUS(status) if os.WIFEXITED(status) else 3)


def _child(job: dict, folder: str, result_w: int, output_w: int, features: dict) -> None:
    """Runs in the forked child: confine it, run the program and its tests, never return."""
    try:
        os.setsid()
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(output_w, 1)
        os.dup2(output_w, 2)
        os.closerange(3, result_w)
        os.closerange(result_w + 1, 1 << 16)
        os.chdir(folder)
        os.environ.clear()
        os.environ.update(HOME=folder, TMPDIR=folder, PATH="/usr/bin:/bin", LANG="C.UTF-8")
        cpu = max(1, int(job["cpu_seconds"]))
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
        _limit(resource.RLIMIT_AS, job["memory_bytes"])
        _limit(resource.RLIMIT_FSIZE, job["file_bytes"])
        _limit(resource.RLIMIT_CORE, 0)
        _limit(resource.RLIMIT_NOFILE, 32)
        if features["landlock_abi"]:
            _landlock(features["landlock_abi"], folder, _readable_roots())
        if features.get("pid_namespace") and LIBC.unshare(_CLONE_NEWPID) != 0:
            raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWPID) failed")
        if os.geteuid() == 0:
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
        elif features.get("user_namespace"):
            _drop_capabilities()
        if features.get("pid_namespace"):
            _become_pid_namespace_init()
        if not _limit(resource.RLIMIT_NPROC, 0):
            raise OSError("could not forbid new processes (RLIMIT_NPROC)")
        if LIBC is not None:  # die with the worker (set after setuid, which clears it)
            LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except BaseException as err:  # noqa: BLE001  (report any set-up failure, then stop)
        os.write(result_w, json.dumps({"setup_error": repr(err)}).encode() + b"\n")
        os._exit(3)
    _run_tests(job, result_w)


def _run_tests(job: dict, result_w: int) -> None:
    # Keep our own references: the program may rebind names in modules it can reach.
    write, dumps, exit_now, literal, text_of = (
        os.write,
        json.dumps,
        os._exit,
        ast.literal_eval,
        repr,
    )
    streams = (sys.stdout, sys.stderr)

    def send(record: dict) -> None:
        write(result_w, dumps(record).encode() + b"\n")

    def describe(err: BaseException) -> str:
        try:
            return f"{type(err).__name__}: {err}"[:300]
        except BaseException:  # noqa: BLE001  (an exception whose __str__ fails)
            return type(err).__name__

    namespace = {"__name__": "candidate", "__builtins__": __builtins__}
    try:
        exec(compile(job["program"], "<candidate>", "exec"), namespace)  # noqa: S102
        function = namespace[job["entry_point"]]
    except BaseException as err:  # noqa: BLE001  (SyntaxError, SystemExit, KeyError ...)
        send({"program_error": describe(err)})
        exit_now(0)
    for i, args_text in enumerate(job["args"]):
        try:
            value = text_of(function(*literal(args_text)))
            send({"test": i, "value": value})
        except BaseException as err:  # noqa: BLE001  (the program's exception is the result)
            send({"test": i, "error": describe(err)})
    for stream in streams:  # what the program printed; os._exit skips the flush at exit
        try:
            stream.flush()
        except BaseException:  # noqa: BLE001, S110  (a closed stream: nothing to keep)
            pass
    exit_now(0)


def _remove(folder: str) -> None:
    """Delete a child's folder, even where the program took away its own permissions."""

    def retry(function, path, _exc_info) -> None:  # noqa: ANN001
        os.chmod(os.path.dirname(path), stat.S_IRWXU)
        if os.path.isdir(path) and not os.path.islink(path):
            os.chmod(path, stat.S_IRWXU)
        function(path)

    shutil.rmtree(folder, onerror=retry)


def run_job(job: dict, features: dict) -> dict:
    """Fork a confined child for one job, wait for it within the limits, and describe the run."""
    folder = tempfile.mkdtemp(prefix="gptlib-sandbox-")
    if os.geteuid() == 0:
        os.chown(folder, NOBODY, NOBODY)
    result_r, result_w = os.pipe()
    output_r, output_w = os.pipe()
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:
        os.close(result_r)
        os.close(output_r)
        _child(job, folder, result_w, output_w, features)
    os.close(result_w)
    os.close(output_w)
    reply = {"results": b"", "output": b"", "output_bytes": 0, "timed_out": False, "cut": ""}
    limits = {result_r: ("results", job["result_bytes"]), output_r: ("output", job["output_bytes"])}
    deadline = start + job["timeout"]
    with selectors.DefaultSelector() as selector:
        for fd in limits:
            selector.register(fd, selectors.EVENT_READ)
        while selector.get_map() and not reply["cut"]:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                reply["timed_out"] = True
                break
            for key, _ in selector.select(remaining):
                chunk = os.read(key.fd, 65536)
                if not chunk:
                    selector.unregister(key.fd)
                    continue
                name, cap = limits[key.fd]
                if name == "output":
                    reply["output_bytes"] += len(chunk)
                    reply["output"] += chunk[: max(0, 2000 - len(reply["output"]))]
                    if reply["output_bytes"] > cap:
                        reply["cut"] = f"it printed more than {cap:,} bytes"
                else:
                    reply["results"] += chunk
                    if len(reply["results"]) > cap:
                        reply["cut"] = f"its results took more than {cap:,} bytes"
    reaped = None
    while not reply["timed_out"] and not reply["cut"]:  # pipes closed: wait for the exit
        if hasattr(os, "waitid"):  # WNOWAIT leaves a zombie: its process group id stays reserved
            if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
                break
        elif (reaped := os.wait4(pid, os.WNOHANG))[0]:  # macOS has no waitid
            break
        if time.monotonic() >= deadline:
            reply["timed_out"] = True
            break
        time.sleep(0.001)
    try:  # kill the whole session, stragglers included
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    _, status, usage = reaped if reaped and reaped[0] else os.wait4(pid, 0)
    for fd in limits:
        os.close(fd)
    _remove(folder)
    return {
        "results": reply["results"].decode("utf-8", "replace").splitlines(),
        "output": reply["output"].decode("utf-8", "replace"),
        "timed_out": reply["timed_out"],
        "cut": reply["cut"],
        "exit_code": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
        "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
        "cpu_seconds": usage.ru_utime + usage.ru_stime,
        "wall_seconds": time.monotonic() - start,
    }


def serve() -> None:
    """The worker's loop: report the features, then answer one JSON line per job line."""
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here]
    features = {
        "platform": sys.platform,
        "landlock_abi": landlock_abi(),
        **(_isolate() if _isolation_works() else dict.fromkeys(_ISOLATION, False)),
        "user": "nobody" if os.geteuid() == 0 else "yours",
    }
    for name in _PRELOADED:
        __import__(name)  # imported once here; a child (which may not read files) inherits them
    _readable_roots()  # computed once here too, before any fork
    features["pid_namespace"] = _pid_namespace_works()
    out = sys.stdout.buffer
    out.write(json.dumps({"ready": features}).encode() + b"\n")
    out.flush()
    for line in sys.stdin.buffer:  # ends when the process that started us closes the pipe
        try:
            reply = run_job(json.loads(line), features)
        except Exception as err:  # noqa: BLE001  (answer, and stay up for the next job)
            reply = {"worker_error": repr(err)}
        out.write(json.dumps(reply).encode() + b"\n")
        out.flush()


if __name__ == "__main__":
    serve()
