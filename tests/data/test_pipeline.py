"""The in-memory batch pipeline: TensorLoader, pad + random crop, random flip, normalisation."""
import pytest
import torch
import torch.nn.functional as F

from src.data.pipeline import TensorLoader, augment, channel_stats, normalize


def known_images(b: int = 64, c: int = 3, h: int = 8, w: int = 10) -> torch.Tensor:
    """uint8 images whose pixels are all different and non-zero, so a crop offset is identifiable."""
    return (torch.arange(b * c * h * w) % 251 + 1).to(torch.uint8).view(b, c, h, w)


def crop_offset(out: torch.Tensor, image: torch.Tensor, pad: int):
    """The (dy, dx) in [-pad, pad]² at which ``out`` is the zero-padded ``image`` cropped, or None."""
    padded = F.pad(image, (pad, pad, pad, pad))
    h, w = image.shape[1:]
    for oy in range(2 * pad + 1):
        for ox in range(2 * pad + 1):
            if torch.equal(padded[:, oy:oy + h, ox:ox + w], out):
                return oy - pad, ox - pad
    return None


def test_tensor_loader_batches_cover_every_sample_once_and_stay_aligned():
    x = torch.arange(10)
    loader = TensorLoader((x, x * 10, x * 100), batch_size=4, shuffle=True)
    assert len(loader) == 3
    torch.manual_seed(0)
    batches = list(loader)
    assert [len(b[0]) for b in batches] == [4, 4, 2]
    seen = torch.cat([b[0] for b in batches])
    assert sorted(seen.tolist()) == list(range(10)) and seen.tolist() != list(range(10))
    for a, b, c in batches:
        assert torch.equal(b, a * 10) and torch.equal(c, a * 100)
    assert torch.cat([b[0] for b in loader]).tolist() != seen.tolist()  # a new order every epoch
    assert len(TensorLoader((x,), 4, drop_last=True)) == 2
    assert [b[0].tolist() for b in TensorLoader((x,), 4)] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert list(TensorLoader((x[:0],), 4)) == []


def test_tensor_loader_rejects_misaligned_tensors():
    with pytest.raises(ValueError, match="same length"):
        TensorLoader((torch.zeros(3), torch.zeros(4)), 2)


def test_augment_keeps_shape_and_dtype():
    images = known_images()
    for pad, flip in [(4, True), (1, False), (0, True)]:
        out = augment(images, pad, flip)
        assert out.shape == images.shape and out.dtype == torch.uint8


def test_crop_is_a_zero_padded_crop_at_an_offset_within_pad():
    images, pad = known_images(), 3
    torch.manual_seed(0)
    out = augment(images, pad, flip=False)
    offsets = [crop_offset(o, i, pad) for o, i in zip(out, images)]
    assert None not in offsets  # every output is the padded input cropped at some |dy|, |dx| <= pad
    assert len(set(offsets)) > 10  # offsets vary across the batch
    assert any(dy != 0 or dx != 0 for dy, dx in offsets)
    # A crop shifted down by dy brings dy rows of zero padding in at the bottom.
    i = next(i for i, (dy, _) in enumerate(offsets) if dy > 0)
    assert (out[i, :, -offsets[i][0]:, :] == 0).all() and (images[i] > 0).all()
    torch.manual_seed(0)
    assert torch.equal(augment(images, pad, flip=False), out)  # same seed, same crops
    assert torch.equal(augment(images, 0, flip=False), images)


def test_flip_mirrors_about_half_of_the_images():
    images = known_images(b=2000, c=1, h=2, w=3)
    torch.manual_seed(0)
    out = augment(images, pad=0, flip=True)
    flipped = (out == images.flip(-1)).flatten(1).all(1)
    kept = (out == images).flatten(1).all(1)
    assert (flipped ^ kept).all()  # each image is either itself or its mirror, never both (w > 1)
    assert 0.45 < flipped.float().mean() < 0.55


def test_crop_and_flip_together_give_a_crop_of_the_image_or_of_its_mirror():
    images, pad = known_images(b=200), 2
    torch.manual_seed(1)
    out = augment(images, pad, flip=True)
    plain = [crop_offset(o, i, pad) is not None for o, i in zip(out, images)]
    mirrored = [crop_offset(o.flip(-1), i, pad) is not None for o, i in zip(out, images)]
    assert all(p != m for p, m in zip(plain, mirrored))  # exactly one of the two, for every image
    assert 0.35 < sum(mirrored) / len(mirrored) < 0.65


def test_normalize_standardises_per_channel():
    images = torch.tensor([0, 255], dtype=torch.uint8).view(1, 1, 1, 2).expand(1, 2, 1, 2)
    mean, std = torch.tensor([0.5, 0.0]), torch.tensor([0.5, 0.25])
    out = normalize(images, mean, std)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, torch.tensor([[[[-1.0, 1.0]], [[0.0, 4.0]]]]))


def test_channel_stats_match_torch_and_stay_finite_on_a_constant_channel():
    torch.manual_seed(0)
    images = torch.randint(0, 256, (300, 3, 5, 5), dtype=torch.uint8)
    images[:, 2] = 7
    mean, std = channel_stats(images, chunk=64)  # several chunks
    x = images.double() / 255
    torch.testing.assert_close(mean, x.mean((0, 2, 3)).float())
    torch.testing.assert_close(std[:2], x[:, :2].std((0, 2, 3), unbiased=False).float())
    assert std[2] == pytest.approx(1 / 255)
    assert torch.isfinite(normalize(images, mean, std)).all()


def shard_batches(n: int, world_size: int, shuffle: bool, pad: bool, batch_size: int = 3, epoch: int = 0):
    """The batches (as lists of sample ids) of every rank, ranks simulated in one process."""
    x = torch.arange(n)
    out = []
    for rank in range(world_size):
        loader = TensorLoader((x, x * 10), batch_size, shuffle=shuffle, rank=rank, world_size=world_size,
                              pad_shards=pad, seed=7, epoch=lambda: epoch)
        batches = list(loader)
        assert len(batches) == len(loader)
        assert all(torch.equal(b, a * 10) for a, b in batches)
        out.append([a.tolist() for a, _ in batches])
    return out


def test_training_shards_are_disjoint_cover_the_epoch_and_have_equal_steps():
    a, b = shard_batches(10, 2, shuffle=True, pad=True)
    ids_a, ids_b = sum(a, []), sum(b, [])
    assert not set(ids_a) & set(ids_b) and sorted(ids_a + ids_b) == list(range(10))
    assert len(a) == len(b) == 2
    # 11 samples on 2 ranks: padded like DistributedSampler to 12, one sample repeated, same steps.
    a, b = shard_batches(11, 2, shuffle=True, pad=True)
    assert [len(x) for x in a] == [len(x) for x in b] == [3, 3]
    assert set(sum(a, []) + sum(b, [])) == set(range(11))
    # Another epoch, another permutation; the same epoch, the same one (every rank agrees).
    assert shard_batches(10, 2, True, True, epoch=1) != shard_batches(10, 2, True, True, epoch=0)
    assert shard_batches(10, 2, True, True, epoch=1) == shard_batches(10, 2, True, True, epoch=1)


def test_training_shards_match_distributed_sampler():
    from torch.utils.data.distributed import DistributedSampler

    for rank in range(3):
        sampler = DistributedSampler(range(11), num_replicas=3, rank=rank, shuffle=True, seed=7)
        sampler.set_epoch(2)
        [ours] = [sum(shard_batches(11, 3, True, True, epoch=2)[rank], [])]
        assert ours == list(sampler)


def test_evaluation_shards_count_every_sample_exactly_once():
    for n, w in [(10, 2), (11, 2), (7, 3), (2, 3)]:
        shards = shard_batches(n, w, shuffle=False, pad=False)
        assert sorted(sum(sum(shards, []), [])) == list(range(n))


def test_world_size_one_draws_todays_batches():
    x = torch.arange(10)
    torch.manual_seed(3)
    expected = torch.randperm(10)  # what TensorLoader always drew: the global RNG
    torch.manual_seed(3)
    got = torch.cat([b[0] for b in TensorLoader((x,), 4, shuffle=True, rank=0, world_size=1)])
    assert torch.equal(got, expected)
    assert [b[0].tolist() for b in TensorLoader((x,), 4, world_size=1)] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


def test_datamodule_takes_rank_and_world_size_from_the_trainer():
    from types import SimpleNamespace

    from src.data.datasets import DigitsDataModule

    dm = DigitsDataModule()
    dm.setup()
    n_test = len(dm.splits["test"][0])
    counts = []
    for rank in range(2):
        dm.trainer = SimpleNamespace(global_rank=rank, world_size=2, current_epoch=0)
        counts.append(sum(len(b[0]) for b in dm.test_dataloader()))
        train = dm.train_dataloader()
        first = torch.cat([b[2] for b in train])
        dm.trainer.current_epoch = 1  # the loader follows the Trainer's epoch (a resumed run too)
        assert train.world_size == 2 and not torch.equal(torch.cat([b[2] for b in train]), first)
    assert sum(counts) == n_test
