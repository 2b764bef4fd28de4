"""Superclass discovery from a finished run's validation data and class vectors."""
import shlex

import numpy as np
import pytest
import torch

from helpers import FAST, compose_cfg
from src.run.console import python_command
from src.data.superclasses import resolve_case, superclass_table
from src.data.superclasses import CASES
from src.discover import (
    DiscoveryError, agreement, canonical, cluster, confusion_distances, discover, load_discovery_inputs, main,
    train_command, vector_distances)
from src.evaluation.protocols import candidate_logits, inferred_scores

# Three interleaved blocks: {0, 4, 7}, {1, 2}, {3, 5, 6, 8}.
BLOCKS = [0, 1, 1, 2, 0, 2, 2, 0, 2]


def block_diagonal_confusion(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.array(BLOCKS)
    confusion = rng.integers(1, 20, size=(9, 9)) * (t[:, None] == t[None, :])  # zero across blocks
    return confusion + np.diag(rng.integers(50, 100, size=9))


@pytest.mark.parametrize("method", ["average", "complete", "single", "weighted"])
def test_a_block_diagonal_confusion_matrix_is_split_into_its_blocks(method):
    for seed in range(3):
        assert cluster(confusion_distances(block_diagonal_confusion(seed)), 3, method) == BLOCKS


def test_confusion_distances_are_symmetric_rates():
    d = confusion_distances(np.array([[8, 2, 0], [0, 5, 5], [0, 0, 4]]))
    # rates: 0->1 0.2, 1->0 0; 1->2 0.5, 2->1 0 -> distance 1 − mean rate.
    np.testing.assert_allclose(d, [[0, 0.9, 1], [0.9, 0, 0.75], [1, 0.75, 0]])


def test_class_vectors_cluster_by_direction():
    rng = np.random.default_rng(0)
    directions = np.eye(3) * 5
    vectors = directions[BLOCKS] + rng.normal(scale=0.3, size=(9, 3))
    vectors *= rng.uniform(0.5, 3, size=(9, 1))  # norms differ: cosine distance ignores them
    assert cluster(vector_distances(vectors), 3) == BLOCKS


def test_canonical_numbering_and_bad_k():
    assert canonical([2, 2, 0, 1, 0]) == [0, 0, 1, 2, 1]
    for k in (1, 10):
        with pytest.raises(DiscoveryError, match="--k must be between 2 and the number of classes"):
            cluster(confusion_distances(block_diagonal_confusion()), k)


def test_agreement_with_table_1():
    case1 = [1, 1, 1, 1, 1, 0, 0, 0, 0, 0]
    ari = agreement(case1, {c: superclass_table("digits", c) for c in CASES})
    assert list(ari) == ["case1", "case2", "case3", "case4"] and ari["case1"] == pytest.approx(1.0)
    assert ari["case2"] < 0.1
    assert agreement([0, 1] * 5, {}, own=[0, 1] * 5, own_case="custom") == {"custom": pytest.approx(1.0)}


@pytest.fixture(scope="module")
def hal_run(tmp_path_factory):
    from src.train import train

    run_dir = tmp_path_factory.mktemp("hal_run")
    train(compose_cfg([*FAST, "case=case1", "trainer.fast_dev_run=true"]), run_dir)
    return run_dir


def test_run_leaves_the_validation_confusion_of_the_inferred_protocol(hal_run, cfg_factory):
    data = load_discovery_inputs(hal_run)
    assert data["dataset"] == "digits" and data["case"] == "case1" and data["protocol"] == "inferred (softmax)"
    assert data["superclasses"] == [1, 1, 1, 1, 1, 0, 0, 0, 0, 0]
    assert data["class_vectors"].shape == (10, 64) and data["class_names"] == [str(d) for d in range(10)]
    # Validation images only (144 of digits' 1,437 training images), never the 360 test images.
    assert data["val_confusion"].sum() == 144
    np.testing.assert_allclose(data["val_soft_confusion"].sum(), 144, rtol=1e-4)


def test_val_confusion_matches_a_recomputation_without_the_true_superclass(run_train, tmp_path, monkeypatch):
    # Capture the trained module: recompute its val predictions with the superclass input zeroed.
    import src.train

    captured = {}
    build = src.train.build

    def spy(cfg, run_dir):
        datamodule, module, callbacks = build(cfg, run_dir)
        captured.update(module=module, datamodule=datamodule)
        return datamodule, module, callbacks

    monkeypatch.setattr("src.train.build", spy)
    run_train("case=case4", "trainer.fast_dev_run=true")
    module, dm = captured["module"], captured["datamodule"]
    images, _, label = dm.on_after_batch_transfer(dm.splits["val"], 0)
    with torch.no_grad():
        h, extras = module.net.eval().forward_features(images.contiguous(memory_format=torch.channels_last))
        # Scores from the candidates alone: the true superclass is not even an argument.
        inferred = inferred_scores(candidate_logits(module.net, h, extras, 3), dm.superclasses, "softmax")
    expected = np.zeros((10, 10), dtype=np.int64)
    np.add.at(expected, (label.numpy(), inferred.argmax(1).numpy()), 1)
    np.testing.assert_array_equal(load_discovery_inputs(tmp_path / "run")["val_confusion"], expected)


def test_discover_writes_mappings_that_train(hal_run, run_train, capsys):
    main([str(hal_run), "--k", "3"])
    out = capsys.readouterr().out
    for method in ("confusion", "vectors"):
        path = hal_run / "discovered" / f"{method}_k3.yaml"
        assert f"wrote {path}" in out
        train_line = path.read_text().splitlines()[3]
        assert train_line.startswith(f"# train: {python_command()} -m src.train dataset=digits case=custom")
        assert f"  train: {train_line.removeprefix('# train: ')}\n" in out
        table = resolve_case({"name": "custom", "file": str(path)}, {}, [str(d) for d in range(10)]).table
        assert sorted(set(table)) == [0, 1, 2]
    assert out.count("adjusted Rand index: case1") == 2
    record = run_train("case=custom", f"case.file={path}", "trainer.fast_dev_run=true")
    assert record["superclasses"] == table


def test_without_validation_data_only_the_vectors_run(run_train, tmp_path, capsys):
    run_train("dataset.val_size=0", "trainer.fast_dev_run=true")
    run = tmp_path / "run"
    assert list(discover(run, 2)) == ["vectors"]  # class vectors need no data
    with pytest.raises(DiscoveryError, match="no validation predictions.*never the test set"):
        discover(run, 2, methods=["confusion"])

    main([str(run), "--k", "2"])  # returns: exit 0
    out, err = capsys.readouterr()
    assert err.splitlines() == [f"warning: skipped the confusion method: {run} has no validation predictions "
                                "(dataset.val_size=0); the confusion method uses validation data only, never the "
                                "test set"]
    assert "\nvectors: " in out and "confusion:" not in out and (run / "discovered" / "vectors_k2.yaml").exists()
    assert not (run / "discovered" / "confusion_k2.yaml").exists()

    with pytest.raises(SystemExit) as exit_info:
        main([str(run), "--k", "2", "--method", "confusion"])  # asked for by name: an error
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and "--method vectors" in err


def test_the_train_command_names_the_images_of_a_folder_run_and_quotes_sweep_paths(tmp_path):
    run = tmp_path / "case=custom,seed=0"
    mapping = run / "discovered" / "vectors_k2.yaml"
    assert train_command(run, "svhn", mapping) == \
        f"{python_command()} -m src.train dataset=svhn case=custom 'case.file=\"{mapping}\"'"
    assert train_command(run, "folder", mapping).startswith(
        f"{python_command()} -m src.train dataset=folder dataset.root=PATH/TO/IMAGES case=custom")  # no .hydra/config.yaml
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "config.yaml").write_text("dataset:\n  name: folder\n  root: my pets\n")
    command = train_command(run, "folder", mapping)
    # What Hydra reads from that command line: the run's images, the mapping file as it is.
    overrides = shlex.split(command)[3:]
    assert overrides[:2] == ["dataset=folder", "dataset.root=\"my pets\""]
    cfg = compose_cfg(overrides)
    assert (cfg.dataset.root, cfg.case.name, cfg.case.file) == ("my pets", "custom", str(mapping))


def test_missing_run_is_a_clear_error(tmp_path):
    with pytest.raises(DiscoveryError, match="hierarchy.npz not found"):
        discover(tmp_path, 2)
    with pytest.raises(DiscoveryError, match="not a run directory"):
        discover(tmp_path / "nope", 2)


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 truncated", b"\x93NUMPY not a zip", None])
def test_a_damaged_hierarchy_file_is_one_line(tmp_path, capsys, content):
    """A truncated or overwritten hierarchy.npz: one `error:` line from the CLI, exit status 1."""
    from src.discover import main

    path = tmp_path / "hierarchy.npz"
    if content is None:  # a real archive, cut in half
        np.savez(path, dataset="digits", case="case1", class_names=np.array(["0", "1"]), superclasses=np.array([0, 1]))
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:
        path.write_bytes(content)
    with pytest.raises(DiscoveryError, match="hierarchy.npz is damaged"):
        discover(tmp_path, 2)
    with pytest.raises(SystemExit) as info:
        main([str(tmp_path), "--k", "2"])
    err = capsys.readouterr().err.strip().splitlines()
    assert info.value.code == 1 and len(err) == 1 and err[0].startswith("error: ") and "damaged" in err[0]
