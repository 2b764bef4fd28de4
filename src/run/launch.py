"""How ``python -m src.train`` is launched, beyond ``@hydra.main``.

- ``run_job(train, cfg)``: one job in its Hydra run dir, on a quiet console (``src/run/console.py``), holding its
  lock (``src/run/lock.py``: a second writer refuses in one line and, in a multirun, returns ``status: locked``
  without touching the dir), ending in its summary line. A signal stops it resumably (``src/run/signals.py``; a
  single run's ``stopped:`` line gives the command that resumes it); an error marks it ``failed``, and is one
  line: in a multirun the sweep goes on with the next job.
- ``cli(main)``: what Hydra refuses before ``main`` runs (a value the schema refuses, a bad override, a run
  dir it cannot create) is one ``error:`` line and exit status 1, like every other bad input.
- DDP: Lightning's launcher starts ranks 1..N-1 of a job with ``ddp_child_command``: this job only, in its
  run dir (Lightning's own re-runs ``sys.argv``, which in a multirun is the whole sweep).
"""
import contextlib
import difflib
import logging
import os
import re
import shlex
import sys
import warnings
from pathlib import Path
from typing import Callable, Optional

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.errors import HydraException, OverrideParseException
from hydra.utils import get_original_cwd
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from src.run import zygote
from src.run.config import did_you_mean, schema_keys
from src.run.errors import ConfigError, exit_code, user_error
from src.run.lock import RunLocked, run_lock
from src.run.records import is_rank_zero, record_failure
from src.run.worker import DIE_WITH_PARENT, die_with_parent

log = logging.getLogger(__name__)


def ddp_child_command(local_rank: int) -> tuple[list[str], str]:
    """The command Lightning's DDP launcher starts for ranks 1..N-1 of this job (replacing its own
    ``_hydra_subprocess_cmd``, which re-runs ``sys.argv``: in a multirun that is the whole sweep, ``-m``
    included). This job's own overrides, its run dir, and no ``.hydra/`` copy: rank 0 wrote it."""
    hydra_cfg = HydraConfig.get()
    command = [sys.executable, "-m", "src.train", *config_flags(), *hydra_cfg.overrides.task,
               f"hydra.run.dir={quoted(hydra_cfg.runtime.output_dir)}",
               f"hydra.job.name=train_ddp_process_{local_rank}", "hydra.output_subdir=null"]
    return command, get_original_cwd()


def config_flags() -> list[str]:
    """The config dir/name options of this command line, as given (``-cd conf``, ``--config-name=x``)."""
    argv, flags = sys.argv[1:], []
    for i, arg in enumerate(argv):
        if arg.split("=")[0] in ("--config-dir", "-cd", "--config-path", "-cp", "--config-name", "-cn"):
            flags += [arg] if "=" in arg else argv[i:i + 2]
    return flags


def quoted(value: str) -> str:
    """A value for Hydra's override grammar, quoted: a multirun's job dir holds '=' and ','."""
    # Hydra unescapes backslashes only before a quote and at the end of a quoted string.
    escaped = re.sub(r"(\\*)'", lambda m: m.group(1) * 2 + "\\'", value)
    return "'" + re.sub(r"(\\+)$", lambda m: m.group(1) * 2, escaped) + "'"


def patch_lightning() -> None:
    """Lightning's DDP children get this job's command; called when a job starts (Lightning is imported only
    by runs that train: --help and --cfg answer without it)."""
    from pytorch_lightning.strategies.launchers import subprocess_script

    subprocess_script._hydra_subprocess_cmd = ddp_child_command


# Under DDP Lightning asks for sync_dist=True on every epoch-level log. Every value logged here is already
# over all ranks: torchmetrics' compute() syncs, the auxiliary statistics are reduced in
# HALModule._log_epoch, TestProtocols passes over the whole test set. Averaging equal values again is a no-op.
warnings.filterwarnings("ignore", message=r".*sync_dist=True.* when logging on epoch level")

_WRAPPED = "_HAL_HYDRA_FULL_ERROR"


def hydra_error(error: BaseException) -> Optional[ConfigError]:
    """One line for what Hydra raises before ``main`` runs: a value the schema refuses (naming its key), a bad
    override, a run dir it cannot create. None for anything else."""
    if isinstance(error, OSError) and error.filename is not None:
        return ConfigError(f"cannot write the run dir (hydra.run.dir / hydra.sweep.dir): {error.strerror}: "
                           f"{error.filename}")
    if isinstance(error, ValueError) and "Only one of --run, --multirun, --cfg" in str(error):
        return ConfigError("--cfg shows one job's config: drop -m (--multirun) and give each key one value")
    if not isinstance(error, (HydraException, OmegaConfBaseException)):
        return None
    cause = error.__cause__ if isinstance(error.__cause__, OmegaConfBaseException) else error
    lines = [line.strip() for line in str(cause).splitlines() if line.strip()]
    key = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("full_key:")), None)
    first = next((line for line in lines if not line.startswith(("In '", "full_key:", "object_type=",
                                                                  "reference_type="))), type(cause).__name__)
    if key:
        parent, _, name = key.rpartition(".")
        hint = did_you_mean(name, schema_keys(parent), f"{parent}." if parent else "") if "not in" in first else ""
        return ConfigError(f"{key}: {first}" + (f" ({hint})" if hint else ""))
    if isinstance(error, OverrideParseException) or "Could not find" not in str(error):
        return ConfigError(first)
    return missing_option(str(error))


def missing_option(message: str) -> ConfigError:
    """An unknown group option (``method=focl``) in one line: the closest option, and all of them, from Hydra's
    message ("Could not find 'method/focl'", then "Available options in 'method':" one per line)."""
    found = re.search(r"Could not find '([^']+)/([^'/]+)'", message)
    options = [o for o in re.findall(r"^\t(\S+)$", message.split("Config search path")[0], flags=re.M)
               if o != "base" and not o.startswith("base_")]  # the typed bases every option extends
    if found is None or not options:
        return ConfigError(" ".join(message.split("Config search path")[0].split()))
    group, name = found.groups()
    close = difflib.get_close_matches(name, options, n=1)
    guess = f"did you mean {group}={close[0]}? " if close else ""
    return ConfigError(f"{group}={name} is not an option of {group}/ ({guess}options: {', '.join(options)})")


def run_job(train: Callable[..., dict], cfg: DictConfig) -> dict:
    """``train(cfg, run_dir, callbacks)`` for the job Hydra composed, as ``@hydra.main`` runs it; its summary
    line at the end (src/run/summary.py)."""
    from src.run.console import quiet

    entered()
    zygote.stop()  # a job run in the launcher's process (hydra/launcher=basic from a config): no local workers
    patch_lightning()
    quiet()
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    if cfg.get("print_config"):
        log.info(OmegaConf.to_yaml(cfg, resolve=True).rstrip())
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(run_lock(run_dir))
        except RunLocked as e:  # another run writes there: touch nothing (not even its record)
            print(f"error: {e}", file=sys.stderr, flush=True)
            if multirun:
                return {"status": "locked", "error": str(e)}
            sys.exit(1)
        return _run_locked(train, cfg, run_dir, multirun)


def _run_locked(train: Callable[..., dict], cfg: DictConfig, run_dir: Path, multirun: bool) -> dict:
    from src.run.console import to_log_file
    from src.run.signals import stop_on_signal
    from src.run.summary import summary_line

    try:
        with stop_on_signal(run_dir, cfg, resume_hint(cfg, run_dir, multirun)) as guard:
            record = train(cfg, run_dir, callbacks=[guard.callback()])
    except Exception as e:
        record = record_failure(run_dir, user_error(e) or e, cfg)
        to_log_file(f"error: {user_error(e) or e}")
        if multirun:
            # One failed job must not stop the sweep: its metrics.json says failed, the report lists it.
            if user_error(e) is None:
                log.exception("job %s failed", run_dir)
            print(f"error: {run_dir.name}: {user_error(e) or e}", file=sys.stderr)
            return record
        sys.exit(exit_code(e))
    if is_rank_zero():
        log.info(summary_line(record, run_dir))
    return record


def resume_hint(cfg: DictConfig, run_dir: Path, multirun: bool) -> str:
    """What the ``stopped:`` line tells: a sweep resumes when the same command runs again (its job dirs have
    no timestamp); a single run's dir has one, so the line gives the command that reuses this dir."""
    if not cfg.trainer.enable_checkpointing:
        return "trainer.enable_checkpointing=false: running it again starts over"
    if multirun:
        return "re-run the same command to resume"
    return f"resume with: {resume_command(run_dir)}"


def resume_command(run_dir: Path) -> str:
    """This job's command line again (interpreter, config dir flags, overrides), in ``run_dir``."""
    from src.run.console import python_command, shown

    overrides = [*HydraConfig.get().overrides.task, f"hydra.run.dir={shown(run_dir)}"]
    return " ".join([python_command(), "-m", "src.train", *map(shlex.quote, config_flags() + overrides)])


def entered() -> None:
    """First thing in ``main``: composition is over, so Hydra's errors are no longer ours to report (see ``cli``)."""
    os.environ.pop(_WRAPPED, None) and os.environ.pop("HYDRA_FULL_ERROR", None)


def cli(main: Callable[[], object]) -> None:
    """``python -m src.train``: also what Hydra refuses before ``main`` runs is one ``error:`` line, exit 1.
    Hydra prints those errors itself, over several lines, unless ``HYDRA_FULL_ERROR`` is set
    (hydra/_internal/utils.py, ``run_and_report``): set it so they reach here; ``main`` unsets it, so its
    own errors and the DDP ranks it starts are as before. A user's own HYDRA_FULL_ERROR=1 is left alone; any
    other value (0, empty) is Hydra's "off", so the one-line errors stay (Hydra tests for "1" too)."""
    if os.environ.get(DIE_WITH_PARENT):  # a job of hydra/launcher=local, or a DDP rank one started
        die_with_parent()
    if os.environ.get("HYDRA_FULL_ERROR") == "1":
        return main()
    os.environ.update({"HYDRA_FULL_ERROR": "1", _WRAPPED: "1"})
    try:
        main()
    except Exception as e:
        if os.environ.get(_WRAPPED) is None:  # raised after main() started: not Hydra's composition
            raise
        sys.exit(exit_code(hydra_error(e) or e))
