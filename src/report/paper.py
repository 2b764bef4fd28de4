"""The paper's results the report compares with (Cha et al., 2019): Table 2, its depths, the figure numbers.

Table 1 (the cases) is data of the datasets: ``src.data.superclasses``. Each dataset's default depth is data
too (``depth`` in conf/dataset/*.yaml); tests/test_train.py checks those of Table 2's datasets equal ``PAPER_DEPTH``.
"""

# Table 2: test error %, mean and std over 5 runs (its baselines have no std).
PAPER_TABLE2 = {
    "mnist": {"baseline": (0.93, None), "case1": (0.43, 0.03), "case2": (0.73, 0.06), "case3": (0.70, 0.05),
              "case4": (0.69, 0.00)},
    "svhn": {"baseline": (4.05, None), "case1": (2.53, 0.06), "case2": (2.64, 0.11), "case3": (2.66, 0.07),
             "case4": (2.86, 0.07)},
    "cifar10": {"baseline": (6.81, None), "case1": (3.30, 0.06), "case2": (5.30, 0.14), "case3": (6.46, 0.08),
                "case4": (5.13, 0.09)},
}
# The depths (6n+4) of Table 2's networks.
PAPER_DEPTH = {"mnist": 10, "svhn": 28, "cifar10": 28}
# Figures of the paper per dataset: (loss per epoch, auxiliary scores).
PAPER_FIGURES = {"mnist": ("Fig. 2", "Fig. 3"), "svhn": ("Fig. 4", "Fig. 5"), "cifar10": ("Fig. 6", "Fig. 7")}

# The recipe of Table 2 where a run's record or config shows it (conf/preset_base/paper_recipe.yaml sets the same;
# tests/report/test_paper_gap.py checks they agree): 250 epochs, no validation split.
PAPER_EPOCHS = 250
PAPER_VAL_SIZE = 0


def paper_gap(epochs: list, val_sizes: list) -> str:
    """What the counted runs of a row do differently from Table 2's recipe, for the flag beside the paper's
    numbers: ``1 of 250 epochs``, ``val_size 0.1 (paper 0)``; "" when nothing differs (or nothing is known)."""
    gaps = []
    epochs = sorted({e for e in epochs if isinstance(e, int)})
    if epochs and epochs != [PAPER_EPOCHS]:
        gaps.append(f"{'/'.join(map(str, epochs))} of {PAPER_EPOCHS} epochs")
    shown = sorted({str(v) for v in val_sizes if v is not None})
    if shown and shown != [str(PAPER_VAL_SIZE)]:
        gaps.append(f"val_size {'/'.join(shown)} (paper {PAPER_VAL_SIZE})")
    return "; ".join(gaps)
