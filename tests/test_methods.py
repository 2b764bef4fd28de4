"""Every method through train(cfg): the fields it writes, the masked protocol, and method=hal == the paper's run."""
import pytest
import torch
import torch.nn.functional as F

from src.data.superclasses import dataset_cases, resolve_case
from src.evaluation import masked_scores, masked_tables
from src.models import PreActResNet
from src.models.dks import DKS, HALDKS
from src.models.heads import HALHeads, SuperclassHeads
from src.models.proxydr import ProxyDR
from src.paper import CASES

# The default run (digits, case1, seed 0) for 2 epochs as the code before the method refactor wrote it
# (commit 6183666, measured on this project's CPU machine): method=hal must reproduce it bit for bit.
BEFORE_METHODS = {"test_error": 11.11111068725586, "test_loss": 0.644737184047699, "val_error": 15.277778625488281,
                  "test_error_inferred": 13.055555555555554, "test_error_shuffled": 13.055555555555554,
                  "hierarchy_spearman": 0.3477937237908419}


def test_method_hal_is_the_paper_run_bit_for_bit(run_train):
    record = run_train("method=hal", "trainer.max_epochs=2")
    assert {k: record[k] for k in BEFORE_METHODS} == BEFORE_METHODS
    assert (record["method"], record["position"]) == ("hal", 3)


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
    record = run_train(f"method={method}", f"case={case}", "+trainer.limit_train_batches=3", "probe=true")
    assert record["status"] == "finished" and record["method"] == method
    assert 0 <= record["test_error"] <= 100
    masked = record["test_error_masked"]
    assert list(masked) == ([case] if method.startswith("hal") else list(CASES))
    assert all(0 <= v <= 100 for v in masked.values())
    for key in ("hierarchy_mean_corr", "hierarchy_rf", "train_images_per_s", "test_error_inferred"):
        assert key in record
    assert record["probe_split"] == "validation"
    # Inference drops the method's extra heads: the plain network (+ the block's W for hal_*) remains.
    plain = sum(p.numel() for p in PreActResNet(10, 10, in_channels=1).parameters())
    block = 64 * 2 if method.startswith("hal") else 0
    if method != "proxydr":
        assert record["params_inference"] == plain + block < record["params_train"]
    for field in fields:
        assert record[field]
    if "test_error_heads" in fields:
        assert len(record["test_error_heads"]) == 3 and record["test_error_heads"][-1] == record["test_error"]
    if "test_superclass_acc_heads" in fields:
        assert set(record["test_superclass_acc_heads"]) == {"superclass1", "superclass2"}
        assert all(0 <= v <= 100 for v in record["test_superclass_acc_heads"].values())


def test_a_method_that_needs_superclasses_refuses_the_baseline(run_train):
    from src.errors import ConfigError

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
