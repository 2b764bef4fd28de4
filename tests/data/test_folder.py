"""dataset=folder on generated PNG/JPEG files: loading, resizing, the superclass file, clear errors."""
from pathlib import Path

import pytest
import torch
from PIL import Image

from helpers import HandScore

from src.data.folder import FolderDataModule
from src.data.folder import FolderDatasetError
from src.data.superclasses import SuperclassError, resolve_case
from src.run.errors import UserError

COLOURS = {"car": (255, 0, 0), "cat": (0, 255, 0), "dog": (0, 0, 255)}


def make_folder(root: Path, train: int = 4, test: int = 2) -> Path:
    """root/{train,test}/<class>/ with solid-colour images of mixed sizes, modes and formats."""
    for split, n in (("train", train), ("test", test)):
        for name, colour in COLOURS.items():
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(n):
                size = (40, 30) if i % 2 else (16, 16)
                Image.new("RGB", size, colour).save(folder / f"{i}.png")
            Image.new("RGB", (20, 20), colour).save(folder / "extra.jpg")
    Image.new("L", (12, 12), 128).save(root / "train" / "cat" / "grey.png")  # grey -> RGB
    (root / "train" / "cat" / "notes.txt").write_text("not an image; ignored")
    return root


def write_mapping(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


@pytest.fixture
def folder(tmp_path):
    return make_folder(tmp_path / "imgs")


def test_classes_come_from_the_train_folders_before_loading(folder):
    dm = FolderDataModule(root=str(folder))
    assert dm.class_names == ("car", "cat", "dog") and dm.num_classes == 3 and not dm.splits


def test_images_are_loaded_resized_to_rgb_with_labels(folder):
    dm = FolderDataModule(root=str(folder), image_size=8, val_size=0)
    dm.superclasses = [0, 1, 1]
    dm.setup()
    images, superclass, labels = dm.splits["train"]
    assert images.shape == (3 * 5 + 1, 3, 8, 8) and images.dtype == torch.uint8
    assert torch.bincount(labels).tolist() == [5, 6, 5]
    assert torch.equal(superclass, torch.tensor([0, 1, 1])[labels])
    for image, label in zip(images, labels):
        colour = torch.tensor(COLOURS[dm.class_names[label]]).view(3, 1, 1)
        grey = (image == 128).all()
        assert grey or (image.int() - colour).abs().max() <= 2  # JPEG may be off by a level or two
    assert sum((image == 128).all() for image in images) == 1
    assert len(dm.splits["test"][2]) == 3 * 3
    # Normalisation statistics come from the training split when the config leaves them null.
    torch.testing.assert_close(dm.mean, images.float().mean((0, 2, 3)) / 255)


def test_native_size_needs_equal_sizes(folder):
    with pytest.raises(FolderDatasetError, match="dataset.image_size"):
        FolderDataModule(root=str(folder), image_size=None).setup()
    root = folder.parent / "same"
    for split in ("train", "test"):
        (root / split / "a").mkdir(parents=True)
        Image.new("RGB", (6, 5)).save(root / split / "a" / "x.png")
    dm = FolderDataModule(root=str(root), image_size=None, val_size=0)
    dm.setup()
    assert dm.image_shape == (3, 5, 6)


def test_superclass_file_maps_class_names(folder, tmp_path):
    names = FolderDataModule(root=str(folder)).class_names
    path = write_mapping(tmp_path / "m.yaml", "animal: [cat, dog]\nvehicle: [car]\n")
    assert resolve_case({"name": "custom", "mapping": None, "file": path}, {}, names).table == [1, 0, 0]


@pytest.mark.parametrize("text, match", [
    ("animal: [cat]\nvehicle: [car]\n", r"classes \['dog'\] are in no superclass"),
    ("animal: [cat, dog]\npets: [dog]\nvehicle: [car]\n", "class 'dog' is in superclass 'animal' and superclass 'pets'"),
    ("animal: [cat, dog, cow]\nvehicle: [car]\n", "lists unknown class 'cow'"),
    ("animal: []\nvehicle: [car, cat, dog]\n", "superclass 'animal' is empty"),
    ("[cat, dog, car]\n", "must list classes"),
])
def test_bad_superclass_files(folder, tmp_path, text, match):
    names = FolderDataModule(root=str(folder)).class_names
    path = write_mapping(tmp_path / "m.yaml", text)
    with pytest.raises(SuperclassError, match=match) as e:
        resolve_case({"name": "custom", "mapping": None, "file": path}, {}, names)
    assert "\n" not in str(e.value)


def test_folders_named_by_number_can_be_listed_as_numbers(tmp_path):
    root = tmp_path / "digits"
    for name in ("3", "7", "12"):
        (root / "train" / name).mkdir(parents=True)
        (root / "test").mkdir(exist_ok=True)
    names = FolderDataModule(root=str(root)).class_names
    assert names == ("12", "3", "7")
    # YAML reads 3 as an int; it means the folder "3", not the class with index 3.
    assert resolve_case({"name": "custom", "mapping": {"a": [3, 7], "b": [12]}, "file": None}, {}, names).table \
        == [1, 0, 0]


def test_missing_root_and_folders(tmp_path):
    with pytest.raises(FolderDatasetError, match="needs dataset.root"):
        FolderDataModule(root=None)
    with pytest.raises(FolderDatasetError, match="has no train/ folder"):
        FolderDataModule(root=str(tmp_path / "nowhere"))
    (tmp_path / "r" / "train").mkdir(parents=True)
    with pytest.raises(FolderDatasetError, match="has no class folders"):
        FolderDataModule(root=str(tmp_path / "r"))
    (tmp_path / "r" / "train" / "a").mkdir()
    with pytest.raises(FolderDatasetError, match="has no test/ folder"):
        FolderDataModule(root=str(tmp_path / "r"))


def test_test_class_unknown_to_train(folder):
    (folder / "test" / "cow").mkdir()
    with pytest.raises(FolderDatasetError, match=r"class folders \['cow'\] that train/ does not have"):
        FolderDataModule(root=str(folder))


@pytest.mark.parametrize("split", ["train", "test"])
def test_empty_class_folder_is_named(folder, split):
    for f in (folder / split / "dog").iterdir():
        f.unlink()
    (folder / split / "dog" / "readme.txt").write_text("no images here")
    with pytest.raises(FolderDatasetError, match=f"{folder / split / 'dog'} is empty"):
        FolderDataModule(root=str(folder)).setup()


def test_unreadable_image_is_named(folder):
    bad = folder / "train" / "dog" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n this is not a png")
    with pytest.raises(FolderDatasetError, match=f"cannot read image {bad}") as e:
        FolderDataModule(root=str(folder)).setup()
    assert "\n" not in str(e.value)


def test_train_on_a_folder_with_a_superclass_file(folder, tmp_path, run_train):
    path = write_mapping(tmp_path / "m.yaml", "vehicle: [car]\nanimal: [cat, dog]\n")
    common = [f"dataset.root={folder}", f"dataset.superclass_file={path}", "dataset.image_size=16",
              "model.depth=10", "dataset.val_size=3"]
    scored = HandScore()
    record = run_train("dataset=folder", "case=custom", *common, callbacks=[scored])
    assert record["status"] == "finished" and record["superclasses"] == [0, 1, 1]
    assert record["dataset"] == "folder"
    assert record["test_error"] == pytest.approx(scored.scores["test_error"], abs=1e-4)
    assert record["val_error"] == pytest.approx(scored.val["test_error"], abs=1e-4)
    assert len(scored.val["label"]) == 3
    with pytest.raises(UserError, match="use case=custom"):
        run_train("dataset=folder", "case=case1", *common, run_dir=tmp_path / "case1")
