"""The streaming evaluation resize by default: short side image_size · 256/224, then the centre image_size square
(torchvision's reference: 256 then 224). Aircraft, iNat and tieredImageNet all evaluate with it."""
import pytest
import torch
from hydra.utils import get_class
from torchvision.io import decode_image
from torchvision.transforms import v2

from helpers import compose_cfg
from test_streaming import folder, module

from src.data.streaming import StreamingDataModule


@pytest.mark.parametrize("image_size, resize", [(14, 16), (224, 256), (112, 128)])
def test_default_resize_is_image_size_times_256_over_224(tmp_path_factory, image_size, resize):
    images = folder(tmp_path_factory.mktemp("resize") / "imgs", classes=3, train=3, test=1)
    dm = module(images, image_size=image_size, val_size=1)   # no resize_size: the default
    assert dm.resize_size == resize                            # 224 -> 256, by hand
    files = dm.splits["test"][0]
    for path, got in zip(files.paths, files[0:len(files)]):
        expected = v2.CenterCrop(image_size)(v2.Resize(resize, antialias=True)(decode_image(path)))
        assert torch.equal(got, expected)


@pytest.mark.parametrize("dataset", ["aircraft", "inat19", "inat21_mini", "tiered_imagenet"])
def test_the_field_data_sets_take_the_default(dataset):
    cfg = compose_cfg([f"dataset={dataset}"]).dataset
    assert issubclass(get_class(cfg._target_), StreamingDataModule)
    assert cfg.get("resize_size") is None and cfg.image_size == 224
