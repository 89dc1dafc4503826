"""The bubblewrap command line of one local sandbox run, and whether bubblewrap works on this machine.

What the code sees: the host's filesystem read-only (`--ro-bind / /`), with the directories that hold secrets or
other runs' files replaced by empty read-only tmpfs (the temp dir, /tmp, /var/tmp, /root, /home, /run, the data
dir, the server's checkout), the Python installation put back read-only, and one writable directory: its own
working dir.
Namespaces: network (only a loopback with nothing behind it), pid (it sees and signals only its own processes;
when bwrap dies everything inside dies), ipc, uts, cgroup.

Who the code runs as: as root, bwrap itself stays privileged (mount namespace without a user namespace) and
`setpriv` drops to a dedicated unprivileged uid/gid per concurrent run with no capabilities, an empty bounding set
and no_new_privs. Root in a user namespace would still be uid 0 to the kernel, which skips RLIMIT_NPROC. As a
normal user, bwrap makes a user namespace (needs unprivileged user namespaces) and drops every capability.
Either way `prlimit` then sets CPU, memory, file-size, process and open-file limits just before Python starts,
inside the namespaces, so the process count is that run's alone.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

# Directories never shown to the code (besides the configured ones); missing ones are skipped.
ALWAYS_HIDDEN = ("/tmp", "/var/tmp", "/root", "/home", "/run", "/srv", "/mnt", "/media")
# The server's own checkout (settings, .env, the SQLite database by default).
SERVER_CHECKOUT = Path(__file__).resolve().parents[4]


@dataclass(frozen=True)
class Limits:
    cpu_seconds: int
    memory_bytes: int
    file_size_bytes: int
    processes: int
    open_files: int = 256


def find_bwrap() -> str | None:
    return shutil.which("bwrap")


def probe(bwrap: str) -> str | None:
    """Runs `true` in the namespaces a real run uses; None when it works, else bwrap's complaint."""
    args = [bwrap, *_namespace_args(), "--ro-bind", "/", "/", "--proc", "/proc", "--dev", "/dev", "--", "true"]
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    return None if done.returncode == 0 else (done.stderr.strip() or f"exit status {done.returncode}")


def interpreter_roots(interpreter: str) -> list[Path]:
    """The directories a Python interpreter needs to start (its prefix and, for a venv, the base install)."""
    if not interpreter or Path(interpreter) == Path(sys.executable):
        return sorted({Path(sys.prefix), Path(sys.base_prefix)})
    given, real = Path(interpreter).absolute(), Path(interpreter).resolve()
    return sorted({given.parent.parent, real.parent.parent})


def command(
    *,
    bwrap: str,
    python: str,
    run_dir: Path,
    work_dir: Path,
    hidden: list[str],
    exposed: list[Path],
    limits: Limits,
    uid: int | None,
    env: dict[str, str],
) -> list[str]:
    """argv of one run: bwrap [mounts, namespaces, env] -- [setpriv] prlimit python -I <run_dir>/main.py."""
    hidden_roots = _outermost(Path(p) for p in [*ALWAYS_HIDDEN, *hidden])
    args = [bwrap, *_namespace_args(as_root=uid is not None), "--die-with-parent", "--new-session"]
    args += ["--ro-bind", "/", "/", "--proc", "/proc", "--dev", "/dev"]
    for root in hidden_roots:
        args += ["--size", str(1024 * 1024), "--perms", "0755", "--tmpfs", str(root)]
    main_py = run_dir / "main.py"
    for path in [*exposed, main_py, work_dir]:
        args += _ancestor_dirs(path, hidden_roots)
    for path in exposed:
        args += ["--ro-bind", str(path), str(path)]
    args += ["--ro-bind", str(main_py), str(main_py), "--bind", str(work_dir), str(work_dir)]
    for root in [*hidden_roots, Path("/dev")]:
        args += ["--remount-ro", str(root)]
    args += ["--chdir", str(work_dir), "--clearenv"]
    for name, value in env.items():
        args += ["--setenv", name, value]
    if uid is None:
        args += ["--cap-drop", "ALL"]
    args.append("--")
    if uid is not None:
        setpriv = shutil.which("setpriv") or "setpriv"
        args += [setpriv, f"--reuid={uid}", f"--regid={uid}", "--clear-groups"]
        args += ["--inh-caps=-all", "--bounding-set=-all", "--no-new-privs"]
    args += [
        shutil.which("prlimit") or "prlimit",
        # Soft limit first: SIGXCPU names the cause (bwrap exits 128+24); the hard one a second later is SIGKILL.
        f"--cpu={limits.cpu_seconds}:{limits.cpu_seconds + 1}",
        f"--as={limits.memory_bytes}",
        f"--fsize={limits.file_size_bytes}",
        f"--nproc={limits.processes}",
        f"--nofile={limits.open_files}",
        "--core=0",
        "--",
        python,
        "-I",
        str(main_py),
    ]
    return args


def _namespace_args(as_root: bool = os.geteuid() == 0) -> list[str]:
    shared = ["--unshare-net", "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"]
    # As root, no user namespace: setpriv must be able to switch to the run's uid (see the module docstring).
    return shared if as_root else ["--unshare-user", *shared]


def _outermost(paths: Iterable[Path]) -> list[Path]:
    """Existing directories, without any that lie inside another one of them (tmpfs over the outer hides both)."""
    candidates = sorted({Path(os.path.realpath(p)) for p in paths})
    kept: list[Path] = []
    for path in candidates:
        if path == Path("/") or not path.is_dir() or any(path.is_relative_to(k) for k in kept):
            continue
        kept.append(path)
    return kept


def _ancestor_dirs(path: Path, hidden_roots: list[Path]) -> list[str]:
    """--dir for each directory between a hidden root and `path`, world-traversable (bwrap would make them 0700)."""
    for root in hidden_roots:
        if path.is_relative_to(root) and path != root:
            args: list[str] = []
            for ancestor in reversed(path.relative_to(root).parents):
                if ancestor != Path("."):
                    args += ["--perms", "0755", "--dir", str(root / ancestor)]
            return args
    return []
