"""Range checks on real composed configs, and the typed schema against every dataset's config."""
import pytest
from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError, ValidationError

from src.config import Cifar10Config, Config, FileDatasetConfig, SVHNConfig, check_config
from src.errors import ConfigError
from tests.conftest import compose_cfg


@pytest.mark.parametrize("dataset", ["digits", "mnist", "svhn", "cifar10"])
def test_the_shipped_configs_pass(dataset):
    check_config(compose_cfg([f"dataset={dataset}"]))


@pytest.mark.parametrize("override, key", [
    ("optimizer.lr=0", "optimizer.lr"), ("optimizer.lr=-0.1", "optimizer.lr"),
    ("optimizer.momentum=1.0", "optimizer.momentum"), ("optimizer.momentum=-0.5", "optimizer.momentum"),
    ("dataset.batch_size=0", "dataset.batch_size"), ("seed=-1", "seed"), (f"seed={2**32}", "seed"),
    ("trainer.max_epochs=0", "trainer.max_epochs"), ("model.depth=12", "model.depth"),
    ("model.depth=4", "model.depth"), ("seed=abc", "seed"), ("trainer.max_epochs=abc", "trainer.max_epochs"),
    ("optimizer.lr=true", "optimizer.lr"),
])
def test_a_value_out_of_range_is_one_line_naming_the_key(override, key):
    with pytest.raises(ConfigError) as info:
        check_config(compose_cfg([override]))
    message = str(info.value)
    assert message.startswith(f"{key} must be ") and "\n" not in message


@pytest.mark.parametrize("override", ["seed=null", "optimizer.momentum=0.9", "model.depth=28", f"seed={2**32 - 1}"])
def test_values_at_the_edges_pass(override):
    check_config(compose_cfg([override]))


@pytest.mark.parametrize("dataset", ["digits", "mnist", "svhn", "cifar10"])
def test_every_dataset_fits_the_schema(dataset):
    merge_into_schema(compose_cfg([f"dataset={dataset}"]))


SCHEMAS = {"digits": FileDatasetConfig, "mnist": FileDatasetConfig, "svhn": SVHNConfig, "cifar10": Cifar10Config}


def merge_into_schema(cfg):
    """What Hydra does once the YAMLs name their bases: the schema first, the YAML merged over it."""
    schema = OmegaConf.structured(Config)
    schema.dataset = OmegaConf.structured(SCHEMAS[cfg.dataset.name])
    return OmegaConf.merge(schema, OmegaConf.masked_copy(cfg, list(Config.__dataclass_fields__)))


@pytest.mark.parametrize("override, error", [("seed=abc", ValidationError), ("trainer.max_epochs=abc", ValidationError),
                                             ("model.depth=abc", ValidationError), ("+trainer.foo=1", ConfigKeyError),
                                             ("+dataset.foo=1", ConfigKeyError)])
def test_the_schema_refuses_typos_and_bad_types(override, error):
    cfg = compose_cfg([override])
    with pytest.raises(error, match=override.lstrip("+").split("=")[0].split(".")[-1]):
        merge_into_schema(cfg)
