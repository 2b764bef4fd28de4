"""threads=N: torch.set_num_threads for the run, recorded in metrics.json; a bad value is one line."""
import pytest
import torch

from src.run.config import check_config
from src.run.errors import ConfigError


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("threads", [1, 2])
def test_the_run_uses_and_records_its_thread_count(run_train, restore_threads, threads):
    record = run_train("trainer.fast_dev_run=true", f"threads={threads}")
    assert record["threads"] == threads == torch.get_num_threads()


def test_threads_null_keeps_torch_default(run_train, restore_threads):
    torch.set_num_threads(2)
    assert run_train("trainer.fast_dev_run=true", "threads=null")["threads"] == 2


def test_a_bad_thread_count_is_one_line(cfg_factory):
    with pytest.raises(ConfigError, match=r"^threads must be an integer >= 1 or null, got 0$"):
        check_config(cfg_factory("threads=0"))
