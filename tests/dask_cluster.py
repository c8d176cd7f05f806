"""A real Dask cluster for tests: ``dask scheduler`` and ``dask worker`` processes on 127.0.0.1.

Started with the ordinary command-line tools (as a user would on a cluster), each process kept by
its Popen handle and stopped by its process id; every wait is bounded in time.
"""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PR_SET_PDEATHSIG = 1


def _die_with_parent():
    """In the child before exec: the kernel kills it (SIGKILL) when the test process dies, even by a crash,
    so no scheduler or worker outlives the tests."""
    import ctypes

    ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
DASK = str(Path(sys.executable).with_name("dask"))
START_TIMEOUT_S = 90


class LocalDaskCluster:
    """``with LocalDaskCluster(tmp, workers=2) as c: c.address, c.worker_pids()``."""

    def __init__(self, folder: Path, workers: int = 2, nanny: bool = False):
        self.folder = Path(folder)
        self.n_workers = workers
        self.nanny = nanny
        self.scheduler = None
        self.workers = []
        self.address = None

    def _env(self):
        env = dict(os.environ)
        env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
        env["DASK_DISTRIBUTED__WORKER__DAEMON"] = "False"
        return env

    def __enter__(self):
        self.folder.mkdir(parents=True, exist_ok=True)
        sfile = self.folder / "scheduler.json"
        log = open(self.folder / "scheduler.log", "wb")
        self.scheduler = subprocess.Popen(
            [DASK, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard", "--scheduler-file", str(sfile)],
            stdout=log, stderr=subprocess.STDOUT, env=self._env(), cwd=str(REPO), preexec_fn=_die_with_parent,
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while not sfile.exists() or not sfile.read_text().strip():
            if time.monotonic() > deadline or self.scheduler.poll() is not None:
                self.__exit__()
                raise RuntimeError(f"dask scheduler did not start: {(self.folder / 'scheduler.log').read_text()[-2000:]}")
            time.sleep(0.2)
        self.address = json.loads(sfile.read_text())["address"]
        assert self.address.startswith("tcp://127.0.0.1:"), self.address
        for i in range(self.n_workers):
            self.add_worker(f"w{i}")
        self.wait_for_workers(self.n_workers)
        return self

    def add_worker(self, name: str):
        log = open(self.folder / f"worker-{name}.log", "wb")
        cmd = [DASK, "worker", self.address, "--host", "127.0.0.1", "--nthreads", "1", "--no-dashboard",
               "--name", name, "--death-timeout", "60"]
        if not self.nanny:
            cmd.append("--no-nanny")
        self.workers.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=self._env(), cwd=str(REPO),
                                             preexec_fn=_die_with_parent))

    def client(self):
        from distributed import Client

        return Client(self.address, timeout=30)

    def wait_for_workers(self, n: int) -> None:
        with self.client() as c:
            c.wait_for_workers(n, timeout=START_TIMEOUT_S)

    def worker_pids(self) -> dict:
        """Worker address -> process id (asked of the workers themselves)."""
        with self.client() as c:
            return c.run(os.getpid)

    def __exit__(self, *exc):
        procs = [p for p in self.workers + [self.scheduler] if p is not None]
        for p in procs:
            if p.poll() is None:
                os.kill(p.pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        for p in procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.kill(p.pid, signal.SIGKILL)
                p.wait(timeout=10)
        return False
