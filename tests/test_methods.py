"""Every method through train(cfg): the fields it writes, the masked protocol, and method=hal == the paper's run."""
import pytest
import torch
import torch.nn.functional as F

from bench.parity import StepLosses, raw_loop
from helpers import FAST, HandScore, compose_cfg, hand_hierarchy
from src.data.superclasses import dataset_cases, resolve_case, superclass_table
from src.evaluation.protocols import masked_scores, masked_tables
from src.models.resnet import PreActResNet
from src.models.dks import DKS, HALDKS
from src.models.heads import HALHeads, SuperclassHeads
from src.models.proxydr import ProxyDR
from src.data.superclasses import CASES
from src.train import train

STEPS = 8


@pytest.mark.parametrize("overrides", [["method=hal"], ["method=hal", "method.position=3"], []],
                         ids=["method=hal", "position=3", "default"])
def test_method_hal_is_the_papers_training_step(overrides, tmp_path):
    """method=hal, however it is composed, trains step for step like the paper's network written by hand
    (bench/parity.py's loop: ResNet, the block fed the one-hot superclass, plain cross-entropy) on real digits,
    and is tested with that network's own forward pass."""
    cfg = compose_cfg([*FAST, *overrides, "trainer.max_epochs=2", f"+trainer.max_steps={STEPS}"])
    _, hand = raw_loop(cfg, torch.device("cpu"), channels_last=cfg.channels_last, max_steps=STEPS)
    losses, scored = StepLosses(), HandScore()
    record = train(cfg, tmp_path, callbacks=[losses, scored])
    assert len(losses.losses) == STEPS and hand[0] != hand[-1]
    assert losses.losses == hand  # bit for bit: the same draws, kernels and order
    assert (record["method"], record["position"]) == ("hal", 3)
    assert record["test_error"] == pytest.approx(scored.scores["test_error"], abs=1e-4)
    assert record["test_loss"] == pytest.approx(scored.scores["test_loss"], rel=1e-4)
    assert record["test_error_inferred"] == pytest.approx(scored.scores["test_error_inferred"], abs=1e-4)


def test_masked_error_of_a_hand_made_logit_matrix():
    table = [0, 0, 1, 1]  # classes 0, 1 in superclass 0; 2, 3 in superclass 1
    logits = torch.tensor([[0.0, 1.0, 5.0, 0.0],    # label 1: the best class overall (2) is outside -> 1
                           [3.0, 0.0, 2.0, 1.0],    # label 2: 0 is outside; among {2, 3} -> 2
                           [0.0, 0.0, 1.0, 2.0],    # label 2: among {2, 3} -> 3, a mistake
                           [4.0, 1.0, 0.0, 0.0]])   # label 0 -> 0
    label = torch.tensor([1, 2, 2, 0])
    predicted = masked_scores(logits, label, table).argmax(1)
    assert predicted.tolist() == [1, 2, 3, 0]
    assert torch.isinf(masked_scores(logits, label, table)[0, 2:]).all()
    assert (predicted != label).float().mean().item() == 0.25


def test_masked_tables_give_the_plain_network_every_case_and_hal_its_own():
    names = [str(d) for d in range(10)]
    cases = dataset_cases("mnist", names)
    assert masked_tables(cases["case4"], cases, auxiliary=True) == {"case4": cases["case4"].table}
    tables = masked_tables(None, cases, auxiliary=False)
    assert list(tables) == list(CASES)
    custom = resolve_case({"name": "custom", "mapping": [[0], [1]]}, {}, ["a", "b"])
    assert list(masked_tables(custom, {}, auxiliary=False)) == ["custom"]


@pytest.mark.parametrize("method, case, fields", [
    ("dks", "baseline", ["test_error_heads"]),
    ("hal_dks", "case1", ["test_error_heads"]),
    ("heads", "case4", ["test_superclass_acc_heads"]),
    ("hal_heads", "case1", ["test_superclass_acc_heads"]),
    ("proxydr", "baseline", []),
])
def test_every_method_trains_and_writes_its_fields(run_train, method, case, fields):
    table = superclass_table("digits", case if case != "baseline" else "case1")
    scored = HandScore(table)
    record = run_train(f"method={method}", f"case={case}", "+trainer.limit_train_batches=3", "probe=true",
                       callbacks=[scored])
    hand = scored.scores
    assert record["status"] == "finished" and record["method"] == method
    assert record["test_error"] == pytest.approx(hand["test_error"], abs=1e-4)
    masked = record["test_error_masked"]
    assert list(masked) == ([case] if method.startswith("hal") else list(CASES))
    case1 = case if case != "baseline" else "case1"
    assert masked[case1] == pytest.approx(hand["masked"], abs=1e-4)
    if "test_error_inferred" in hand:
        assert record["test_error_inferred"] == pytest.approx(hand["test_error_inferred"], abs=1e-4)
    else:  # no block: nothing to infer, the plain logits
        assert record["test_error_inferred"] == pytest.approx(record["test_error"], abs=1e-4)
    # The class vectors' hierarchy metrics, rescored (helpers.hand_hierarchy) in the head's metric, against the
    # tree every run is scored on (eval.hierarchy=default: case1 for digits, whatever the run's case).
    assert record["hierarchy_name"] == "case1"
    mean_corr, rf = hand_hierarchy(hand["class_vectors"], superclass_table("digits", "case1"), "arccos" if method == "proxydr" else "euc")
    assert record["hierarchy_mean_corr"] == pytest.approx(mean_corr, abs=1e-9)
    assert record["hierarchy_rf"] == pytest.approx(rf, abs=1e-12)
    assert record["train_images_per_s"] > 0
    assert record["probe_split"] == "validation"
    # Inference drops the method's extra heads: the plain network (+ the block's W for hal_*) remains.
    plain = sum(p.numel() for p in PreActResNet(10, 10, in_channels=1).parameters())
    block = 64 * 2 if method.startswith("hal") else 0
    if method != "proxydr":
        assert record["params_inference"] == plain + block < record["params_train"]
    assert set(fields) <= set(record)
    label, superclass = hand["label"], hand["superclass"]
    if "test_error_heads" in fields:
        # One error per DKS branch, from the branch's own logits, and the main head's last.
        branches = [100 * (v.argmax(1) != label).float().mean().item()
                    for k, v in hand["extras"].items() if v.shape[1] == 10]
        assert len(branches) == 2
        assert record["test_error_heads"] == pytest.approx(branches + [record["test_error"]], abs=1e-4)
    if "test_superclass_acc_heads" in fields:
        heads = {k: 100 * (v.argmax(1) == superclass).float().mean().item() for k, v in hand["extras"].items()}
        assert record["test_superclass_acc_heads"] == pytest.approx(heads, abs=1e-4)


def test_a_method_that_needs_superclasses_refuses_the_baseline(run_train):
    from src.run.errors import ConfigError

    with pytest.raises(ConfigError, match="method=hal_dks needs superclasses"):
        run_train("method=hal_dks", "case=baseline")


@pytest.mark.parametrize("method", [DKS(), HALDKS(), SuperclassHeads(), HALHeads(stages=(2, 3), weight=0.5),
                                    ProxyDR(), ProxyDR(distance="euc", dynamic_scale=False)],
                         ids=lambda m: f"{m.name}")
def test_one_sgd_step_gives_every_parameter_a_finite_gradient(method):
    torch.manual_seed(0)
    s = 3
    net = PreActResNet(10, 10, in_channels=1, num_superclasses=s if method.auxiliary else None)
    method.attach(net, 10, s)
    x, y = torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,))
    superclass = y % s
    before = [p.detach().clone() for p in net.parameters()]
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    loss = method.loss(net(x, F.one_hot(superclass, s).float() if method.auxiliary else None), y, superclass)
    loss.backward()
    assert torch.isfinite(loss)
    for name, p in net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    optimizer.step()
    assert any(not torch.equal(b, p) for b, p in zip(before, net.parameters()))
