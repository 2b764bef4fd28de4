"""A fork server for the workers of ``hydra/launcher=local`` on a Linux machine without GPUs: it imports what a job
imports once, while the launcher composes the sweep, and forks each worker from there.

Why: a worker's imports (torch, Lightning, torchmetrics, torchvision, TensorBoard, scikit-learn) take 5-7 s of one
core here, more than the launcher's own start-up (3-4 s of Hydra composing the sweep). Spawned workers start them only once the
launcher has planned the sweep, and import the same modules side by side, one core each. The zygote starts
with the command (``start``, before Hydra parses it), imports on the core the launcher leaves idle, and its
forked children share those pages: N workers ready when one import is.

- Started only for ``-m`` without ``hydra/launcher=...`` naming another launcher on the command line, and without
  a GPU driver (a forked process must never have touched CUDA; on GPU machines jobs outlast start-up anyway).
  ``HAL_ZYGOTE=0`` turns it off. Without it (or once it died) the launcher spawns its workers, as before.
- A forked worker is what a spawned one is (``src/run/worker.py``): its own session, the launcher's environment
  and working directory as they are when it is forked, and it dies with the zygote, which dies with the launcher
  (``worker.die_with_parent``, both). The zygote reaps its children and tells the launcher how each ended.
- It imports only (``worker.preload``): no CUDA, no torch thread pool, no file a job writes. (numpy's and scipy's
  OpenBLAS start idle threads at import; OpenBLAS stops them around ``fork``.) It exits when the launcher closes
  its socket or dies. In ``ps`` a forked worker shows the zygote's command line.
"""
import atexit
import os
import pickle
import select
import signal
import socket
import subprocess
import sys
import traceback
from typing import Optional, Sequence

ENV = "HAL_ZYGOTE"
NOT_A_SWEEP = ("-c", "--cfg", "-h", "--help", "--hydra-help", "--version", "-i", "--info", "-sc", "--shell-completion")
SIZE = 1 << 20  # a message's largest size (a pickled environment is a few kB)
IMPORTS_S = 300  # the longest wait for its imports: 5 s here, minutes on a loaded machine's cold disk

_running = None  # the launcher's zygote, once started


def wanted(argv: Sequence[str]) -> bool:
    """Whether ``python -m src.train ARGV`` is a sweep on the local launcher of a machine without GPU driver."""
    from src.run.resources import no_gpu_driver
    from src.run.worker import DIE_WITH_PARENT

    if os.environ.get(ENV) == "0" or os.environ.get(DIE_WITH_PARENT) or not {"-m", "--multirun"} & set(argv):
        return False
    if any(a.split("=")[0] in NOT_A_SWEEP for a in argv):
        return False
    launchers = [a.split("=", 1)[1] for a in argv if a.lstrip("+~").startswith("hydra/launcher=")]
    return all(name == "local" for name in launchers) and no_gpu_driver()


def start(argv: Sequence[str], module: str) -> None:
    """Start the zygote importing ``module`` (the launching command's) and a job's imports, if ``wanted``."""
    global _running
    if _running is not None or not wanted(argv):
        return
    try:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        with theirs:
            # Its own session: Ctrl-C in the terminal reaches the launcher alone, as for the workers.
            process = subprocess.Popen([sys.executable, "-m", "src.run.zygote", str(theirs.fileno()), module],
                                       pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, start_new_session=True)
        _running = Zygote(process, ours)
        atexit.register(stop)  # also when Hydra refuses the command: the zygote may still be importing
    except OSError:  # no zygote: the workers are spawned
        pass


def running() -> Optional["Zygote"]:
    return _running


def stop() -> None:
    """The zygote exits (at the end of a local sweep, or when another launcher runs the jobs)."""
    global _running
    if _running is not None:
        _running.close()
        _running = None


def send(sock: socket.socket, message: tuple, fds: Sequence[int] = ()) -> None:
    socket.send_fds(sock, [pickle.dumps(message)], list(fds))


def receive(sock: socket.socket, fds: int = 0) -> tuple[Optional[tuple], list[int]]:
    """One message (None when the other end closed) and the file descriptors it carried."""
    data, received, _, _ = socket.recv_fds(sock, SIZE, fds)
    return (pickle.loads(data) if data else None), received


class Zygote:
    """The launcher's end: fork a worker, wait for one to end."""

    def __init__(self, process: subprocess.Popen, sock: socket.socket) -> None:
        self.process, self.sock, self.ended, self.forked = process, sock, {}, False

    def _next(self, kind: str) -> Optional[tuple]:
        """The next message (an ``ended`` one is kept in ``self.ended``); None once the zygote is gone."""
        while True:
            try:
                message, _ = receive(self.sock)
            except TimeoutError:
                raise
            except OSError:
                message = None
            if message is None:
                return None
            if message[0] == "ended":
                self.ended[message[1]] = message[2]
            if message[0] == kind:
                return message

    def fork(self, env: dict, fds: Sequence[int]) -> Optional["Forked"]:
        """A worker reading its jobs and writing its answers on ``fds``; None when the zygote is gone, or stuck."""
        # The first answer comes once its imports are done (~5 s here); a stuck zygote has no worker to lose yet.
        self.sock.settimeout(None if self.forked else IMPORTS_S)
        try:
            send(self.sock, ("fork", env, os.getcwd()), fds)
            message = self._next("forked")
        except TimeoutError:
            print(f"the zygote did not import in {IMPORTS_S} s: starting the workers without it (src/run/zygote.py)",
                  file=sys.stderr, flush=True)
            stop()
            return None
        except OSError:
            return None
        finally:
            if self.sock.fileno() != -1:
                self.sock.settimeout(None)
        self.forked = self.forked or message is not None
        return Forked(message[1], self) if message else None

    def wait(self, pid: int) -> int:
        """``pid``'s exit status as ``Popen.returncode`` gives it (-9: killed by SIGKILL)."""
        while pid not in self.ended:
            if self._next("ended") is None:  # the zygote died, and its children with it (die_with_parent)
                return -signal.SIGKILL
        return self.ended.pop(pid)

    def close(self) -> None:
        """Its workers are gone (``local.Pool`` waited for them): SIGKILL ends it also mid-import, and it is reaped
        here (PID 1 of a container may reap no orphan)."""
        self.sock.close()
        self.process.kill()
        self.process.wait()


class Forked:
    """A forked worker, as ``local.Worker`` uses a ``Popen``: a pid leading its process group, and ``wait()``."""

    def __init__(self, pid: int, zygote: Zygote) -> None:
        self.pid, self.zygote = pid, zygote

    def wait(self) -> int:
        return self.zygote.wait(self.pid)


def child(sock: socket.socket, wakeup: tuple, fds: list[int], env: dict, cwd: str, forked: int) -> None:
    """In a forked child: become a worker (``src/run/worker.py``); never return to the zygote's loop."""
    code = 1
    try:
        os.setsid()  # before the zygote answers (closing ``forked``): the launcher signals the worker's group
        os.close(forked)
        sock.close(), os.close(wakeup[0]), os.close(wakeup[1])
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        os.environ.clear()
        os.environ.update(env)
        os.chdir(cwd)
        from src.run import worker

        sys.argv = [worker.__file__, *map(str, fds)]
        worker.main(*fds)
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush(), sys.stderr.flush()
        os._exit(code)


def serve(fd: int, module: str) -> None:
    """The zygote: import, then fork a worker per request and report each one's end, until the launcher closes."""
    from src.run.worker import die_with_parent, preload

    die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the launcher passes Ctrl-C on to the workers
    sock = socket.socket(fileno=fd)
    preload(module)
    wake, woken = os.pipe()
    os.set_blocking(woken, False)
    signal.set_wakeup_fd(woken)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # a child ended: wakes the select below
    while True:
        readable, _, _ = select.select([sock, wake], [], [])
        if wake in readable:
            os.read(wake, 512)
        while True:  # reap every child that ended: no zombies
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            tell(sock, ("ended", pid, os.waitstatus_to_exitcode(status)))
        if sock in readable:
            try:
                message, fds = receive(sock, 2)
            except OSError:
                message = None
            if message is None:  # the launcher closed its end, or died: so do its workers (die_with_parent)
                os._exit(0)
            ready, forked = os.pipe()
            sys.stdout.flush(), sys.stderr.flush()  # nothing buffered is written twice
            pid = os.fork()
            if pid == 0:
                os.close(ready)
                child(sock, (wake, woken), fds, *message[1:], forked)
            os.close(forked)
            os.read(ready, 1)  # end of file once the child has its own session
            os.close(ready)
            for received in fds:
                os.close(received)
            tell(sock, ("forked", pid))


def tell(sock: socket.socket, message: tuple) -> None:
    """Send ``message`` to the launcher; exit if it is gone."""
    try:
        send(sock, message)
    except OSError:
        os._exit(0)


if __name__ == "__main__":
    serve(int(sys.argv[1]), sys.argv[2])
