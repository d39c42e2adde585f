"""Triton Inference Server on this machine: the binary PyPI's ``nvidia-pytriton`` ships.

PyPI has no other build of the server (its ``tritonserver`` package is a placeholder);
``nvidia-pytriton`` carries a real ``tritonserver`` with the Python backend and one
backend stub per Python version. gpmask runs that binary on a model repository of its
own (:mod:`gpmask.serve.repository`) instead of binding a function with PyTriton's
``Triton.bind``: PyTriton's proxy model moves tensors with the stub's numpy calls,
which under numpy 2 deliver wrong values (a frame [1, 2, 3, 4] arrived as [1, 1, 1, 1]
here) and empty outputs; gpmask's models use DLPack instead
(:mod:`gpmask.serve.protocol`), which is right under numpy 1 and 2 alike.

Two traps are handled here. The stub links ``libpython3.X.so`` by name; found in the
system's library folder when the interpreter is another build of the same version,
it fails to load the model (``'_thread.RLock' object has no attribute
'_recursion_count'``), so the interpreter's own ``LIBDIR`` goes first on
``LD_LIBRARY_PATH``. And the stub's embedded Python finds its packages through the
``python3`` first on ``PATH``, so this environment's ``bin`` goes first there.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from gpmask.errors import GpmaskError

INSTALL_HINT = ("Triton Inference Server is not installed here; `pip install 'gpmask[serve]'` "
                "installs it (the nvidia-pytriton wheel carries the server)")


@dataclass(frozen=True)
class TritonInstall:
    """Where the server's parts lie in the installed ``nvidia-pytriton`` wheel."""

    binary: Path
    python_backend: Path
    stub: Path
    libraries: Path


def find_triton() -> TritonInstall:
    """The installed server, with the backend stub for this Python; refused with what to
    install when it is missing. The ``pytriton`` package is located, not imported."""
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise GpmaskError(INSTALL_HINT)
    root = Path(next(iter(spec.submodule_search_locations)))
    server = root / "tritonserver"
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    install = TritonInstall(
        binary=server / "bin" / "tritonserver",
        python_backend=server / "backends" / "python",
        stub=server / "python_backend_stubs" / version / "triton_python_backend_stub",
        libraries=root.parent / "nvidia_pytriton.libs",
    )
    if not install.libraries.is_dir():  # a source checkout of PyTriton
        install = TritonInstall(install.binary, install.python_backend, install.stub,
                                server / "external_libs")
    if not install.binary.is_file():
        raise GpmaskError(f"{INSTALL_HINT} ({install.binary} is missing)")
    if not install.stub.is_file():
        raise GpmaskError(f"the installed nvidia-pytriton has no Python-backend stub for "
                          f"Python {version} ({install.stub} is missing)")
    return install


def server_environment(install: TritonInstall) -> dict[str, str]:
    """The server's environment: this interpreter's libpython and packages first."""
    env = dict(os.environ)
    libraries = [sysconfig.get_config_var("LIBDIR") or "", str(install.libraries),
                 env.get("LD_LIBRARY_PATH", "")]
    env["LD_LIBRARY_PATH"] = ":".join(part for part in libraries if part)
    env["PATH"] = os.pathsep.join([str(Path(sys.exec_prefix) / "bin"), env.get("PATH", "")])
    return env


@dataclass(frozen=True)
class Endpoints:
    """Where the server listens. Port 0 is not allowed: Triton would not say which port
    it took, so callers choose (:func:`free_port`)."""

    host: str = "127.0.0.1"
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002

    def __post_init__(self) -> None:
        ports = (self.http_port, self.grpc_port, self.metrics_port)
        if any(not 0 < port < 65536 for port in ports):
            raise GpmaskError(f"ports must be 1-65535, got {ports}")
        if len(set(ports)) != 3:
            raise GpmaskError(f"--http-port, --grpc-port and --metrics-port must differ, "
                              f"got {ports}")

    @property
    def http_url(self) -> str:
        return f"{_url_host(self.host)}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{_url_host(self.host)}:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{_url_host(self.host)}:{self.metrics_port}/metrics"


def _url_host(host: str) -> str:
    """The address a client on this machine reaches a server bound to ``host`` at."""
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on now (the kernel's choice), for tests and benchmarks."""
    import socket

    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class TritonServer:
    """``tritonserver`` on ``repository`` as a child process; a context manager.

    Args:
        repository: a model repository folder.
        endpoints: addresses and ports.
        log: a file that receives the server's log; None keeps it in a temporary file,
            whose error lines are quoted if the server fails to start.
        exit_timeout_s: how long the server waits for requests in flight when stopped.

    The server is told to end when the thread that started it ends (Linux's parent-death
    signal), so a killed ``gpmask serve`` leaves no server behind: start it from a thread
    that lives as long as the server should (the main thread, in gpmask).
    """

    def __init__(self, repository: str | os.PathLike, endpoints: Endpoints = Endpoints(),
                 log: IO[bytes] | None = None, exit_timeout_s: int = 10) -> None:
        self.repository = Path(repository)
        self.endpoints = endpoints
        self.exit_timeout_s = exit_timeout_s
        self._log = log
        self._log_path = Path(log.name) if log is not None and isinstance(log.name, str) \
            else None
        self._workspace: Path | None = None
        self.process: subprocess.Popen | None = None

    def start(self, timeout_s: float = 180.0) -> None:
        """Start the server and wait until every model is loaded and it answers ready."""
        install = find_triton()
        self._workspace = Path(tempfile.mkdtemp(prefix="gpmask-triton-"))
        backend = self._workspace / "backends" / "python"
        backend.mkdir(parents=True)
        for part in install.python_backend.iterdir():
            if part.is_file():
                (backend / part.name).symlink_to(part)
        (backend / install.stub.name).symlink_to(install.stub)
        if self._log is None:
            self._log_path = self._workspace / "tritonserver.log"
            self._log = open(self._log_path, "wb")  # noqa: SIM115 - closed by stop()
        e = self.endpoints
        command = [
            str(install.binary), f"--model-repository={self.repository.resolve()}",
            f"--backend-directory={backend.parent}",
            f"--http-address={e.host}", f"--http-port={e.http_port}",
            f"--grpc-address={e.host}", f"--grpc-port={e.grpc_port}",
            f"--metrics-address={e.host}", f"--metrics-port={e.metrics_port}",
            "--allow-gpu-metrics=false", f"--exit-timeout-secs={self.exit_timeout_s}",
        ]
        self.process = subprocess.Popen(
            command, env=server_environment(install), stdin=subprocess.DEVNULL,
            stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        try:
            self._wait_ready(timeout_s)
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, timeout_s: float) -> None:
        url = f"http://{self.endpoints.http_url}/v2/health/ready"
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise GpmaskError(f"Triton Inference Server stopped while starting: "
                                  f"{self.log_errors() or 'see its log'}")
            with contextlib.suppress(urllib.error.URLError, OSError):
                with urllib.request.urlopen(url, timeout=1) as response:
                    if response.status == 200:
                        return
            time.sleep(0.2)
        raise GpmaskError(f"Triton Inference Server was not ready after {timeout_s:.0f} s: "
                          f"{self.log_errors() or 'see its log'}")

    def log_errors(self) -> str:
        """The error lines of the server's log, one line."""
        if self._log_path is None or not self._log_path.is_file():
            return ""
        self._log.flush()
        text = self._log_path.read_text(errors="replace")
        errors = [re.sub(r"^E\d{4} [\d:.]+ +\d+ [\w.]+:\d+\] ", "", line).strip('"')
                  for line in text.splitlines() if line.startswith("E")]
        ignored = ("CudaDriverHelper", "DCGM", "NVML")  # a machine without a GPU
        return "; ".join(line for line in errors if not any(w in line for w in ignored))

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> int | None:
        """Stop the server (SIGINT: it finishes the requests in flight), then remove the
        workspace. Returns its exit code."""
        code = None
        if self.process is not None:
            if self.process.poll() is None:
                self.process.send_signal(signal.SIGINT)
            try:
                code = self.process.wait(self.exit_timeout_s + 10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                code = self.process.wait()
        if self._workspace is not None:
            if self._log_path is not None and self._log_path.parent == self._workspace:
                self._log.close()
                self._log, self._log_path = None, None
            shutil.rmtree(self._workspace, ignore_errors=True)
            self._workspace = None
        return code

    def __enter__(self) -> TritonServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _die_with_parent() -> None:
    """In the child: have Linux send SIGTERM when the thread that started it ends."""
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
