"""``python -m src.run.worker IN OUT [MODULE]``: one worker process of ``hydra/launcher=local`` (``src/run/local.py``).

It imports what a job of the launching command's module (``src.train``) imports, once (``preload``; a worker the
zygote forked, ``src/run/zygote.py``, has it done already), then runs the jobs the launcher sends on pipe ``IN``
one after another, each as Hydra's ``run_job`` runs a job of a multirun, and answers each on pipe ``OUT`` with how
it ended. While a job runs, the worker's stdout and stderr go to the job's log (``<run dir>/train.log``): the
terminal shows the launcher's lines alone. It dies with the launcher (``die_with_parent``), and stops after a job a signal stopped.
"""
import ast
import contextlib
import gc
import importlib.util
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path

DIE_WITH_PARENT = "HAL_DIE_WITH_PARENT"  # set for the workers and inherited by what they start (DDP ranks)
# Imported inside libraries and datamodules when a job starts, beyond the launching module's own imports:
# Lightning's TensorBoardLogger (the default logger), scikit-learn's digits. One missing here costs time, not results.
LAZY = ("torch", "pytorch_lightning", "torch.utils.tensorboard", "sklearn.datasets", "sklearn.model_selection")


def die_with_parent() -> None:
    """SIGKILL this process when its parent dies, even by SIGKILL: no training outlives the launcher.
    Linux: the kernel's parent-death signal (prctl PR_SET_PDEATHSIG); elsewhere a thread that polls the parent."""
    parent = os.getppid()
    try:
        import ctypes

        if ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL) != 0:  # 1: PR_SET_PDEATHSIG
            raise OSError
    except (OSError, AttributeError):
        def watch() -> None:
            while os.getppid() == parent:
                time.sleep(0.5)
            os.kill(os.getpid(), signal.SIGKILL)

        threading.Thread(target=watch, daemon=True).start()
    if os.getppid() != parent or parent == 1:  # the parent died before the signal was armed
        os._exit(1)


def imports_of(module: str) -> list[str]:
    """The modules ``module``'s source imports, in its functions too (``src.train`` imports Lightning, the models
    and the callbacks inside ``build`` and ``train``)."""
    with open(importlib.util.find_spec(module).origin) as f:
        tree = ast.parse(f.read())
    return [name for node in ast.walk(tree) for name in (
        [a.name for a in node.names] if isinstance(node, ast.Import) else
        [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else [])]


def preload(module: str) -> None:
    """Import what a job of ``module`` (the launching command's: ``src.train``) imports, before the first job.
    With the garbage collector off: imports allocate and keep, and its full passes over what they made (7 here)
    were 1.5-2 s of the 7 s. Then frozen: never garbage, skipped by the jobs' collections (0.3 s each)."""
    gc.disable()
    try:
        importlib.import_module(module)
        for name in (*imports_of(module), *LAZY):
            try:
                importlib.import_module(name)
            except ImportError:  # an optional package (TensorBoard) not installed: the job goes without
                pass
    finally:
        gc.freeze()
        gc.enable()


@contextlib.contextmanager
def output_to(log: Path):
    """File descriptors 1 and 2 (Python's prints, C libraries, tracebacks) appended to ``log`` meanwhile."""
    log.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush(), sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1), os.dup2(fd, 2)
    os.close(fd)
    try:
        yield
    finally:
        sys.stdout.flush(), sys.stderr.flush()
        os.dup2(saved[0], 1), os.dup2(saved[1], 2)
        os.close(saved[0]), os.close(saved[1])


def without_console(task_function):
    """The task function with the console handlers of Hydra's job logging removed: the console of a job is its
    log file already (``output_to``), which Hydra's file handler writes the same lines to."""
    def task(cfg):
        root = logging.getLogger()
        for handler in list(root.handlers):
            if type(handler) is logging.StreamHandler:
                root.removeHandler(handler)
        return task_function(cfg)

    return task


def outcome(returned) -> tuple[str, dict, str]:
    """(finished | failed | locked | interrupted, the job's record, why it did not finish) of a ``JobReturn``."""
    from hydra.core.utils import JobStatus

    if returned.status == JobStatus.FAILED:
        error = returned._return_value
        return "failed", {}, f"{type(error).__name__}: {error}"
    record = returned._return_value if isinstance(returned._return_value, dict) else {}
    status = record.get("status")
    # debug (debug presets) and validated (test=false) are how those runs finish; a tune job says finished.
    if status in ("finished", "debug", "validated"):
        return "finished", record, ""
    if status in ("locked", "interrupted"):
        return status, record, record.get("error") or ""
    return "failed", record, record.get("error") or f"status {status}"


def run(launcher, config, singleton_state: dict, run_dir: str) -> dict:
    """One job, as hydra-submitit-launcher's ``BaseSubmititLauncher.__call__`` runs it in a SLURM task; its config
    as the launcher composed it (``jobs.job_config``: composing it again here took 0.3-0.6 s a job)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.singleton import Singleton
    from hydra.core.utils import run_job, setup_globals

    from src.run.records import read_record

    Singleton.set_state(singleton_state)
    setup_globals()
    HydraConfig.instance().set_config(config)
    with output_to(Path(run_dir) / f"{config.hydra.job.name}.log"):
        try:
            returned = run_job(hydra_context=launcher.hydra_context, task_function=without_console(launcher.task_function),
                               config=config, job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir")
        except (SystemExit, KeyboardInterrupt) as e:  # a stop signal (src/run/signals.py), or one outside it
            code = e.code if isinstance(e, SystemExit) else 130
            if isinstance(code, int) and code > 128:
                return {"outcome": "interrupted", "record": read_record(Path(run_dir)), "error": "", "stop": True}
            return {"outcome": "failed", "record": read_record(Path(run_dir)), "error": f"exited with status {code}",
                    "stop": True}
        except Exception as e:  # Hydra's own errors around the job
            logging.getLogger(__name__).exception("job %s failed", run_dir)
            return {"outcome": "failed", "record": {}, "error": f"{type(e).__name__}: {e}", "stop": False}
    state, record, error = outcome(returned)
    return {"outcome": state, "record": record, "error": error, "stop": state == "interrupted"}


def main(read_fd: int, write_fd: int, module: str = "") -> None:
    import cloudpickle
    from multiprocessing.connection import Connection

    die_with_parent()
    jobs, answers = Connection(read_fd, writable=False), Connection(write_fd, readable=False)
    try:
        if module:  # the launching command's module (src.train): its start-up once per worker, before any job
            preload(module)

        while True:
            message = jobs.recv_bytes()
            if not message:  # the launcher has no more jobs for this worker: every answer is sent and every
                sys.stdout.flush(), sys.stderr.flush()  # record written, so skip the interpreter's teardown of torch
                os._exit(0)  # and Lightning (1-3 s per worker, paid at the end of every sweep)
            answer = run(*cloudpickle.loads(message))
            answers.send(answer)
            if answer["stop"]:
                return
    except (EOFError, BrokenPipeError, KeyboardInterrupt):  # the launcher is gone, or stopped this idle worker
        return


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), *sys.argv[3:])
