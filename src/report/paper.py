"""The paper's constants (Cha et al., 2019), in one place: Table 1 cases, Table 2 values, depths, figures."""

# Table 1 written as superclass -> classes, the way the paper prints it.
_DIGIT_CASES = {
    "case1": [[5, 6, 7, 8, 9], [0, 1, 2, 3, 4]],  # >= 5
    "case2": [[1, 3, 5, 7, 9], [0, 2, 4, 6, 8]],  # mod 2
    "case3": [[2, 3, 5, 7], [0, 1, 4, 6, 8, 9]],  # prime
    "case4": [[0, 6, 8, 9], [2, 3, 5], [1, 4, 7]],  # circle / curve / straight line
}
_CIFAR10_CASES = {
    "case1": _DIGIT_CASES["case1"],  # non-semantic, by label index
    "case2": _DIGIT_CASES["case2"],  # non-semantic, by label index
    "case3": [[2, 3, 4, 5, 6, 7], [0, 1, 8, 9]],  # animal / transportation
    "case4": [[1, 9], [3, 5], [4, 7], [0, 8], [2, 6]],  # car / small animal / big animal / craft / others
}
# digits (scikit-learn's 8x8 digits) is not in the paper; its classes are MNIST's, so it takes MNIST's cases.
PAPER_CASES = {"digits": _DIGIT_CASES, "mnist": _DIGIT_CASES, "svhn": _DIGIT_CASES, "cifar10": _CIFAR10_CASES}
CASES = ("case1", "case2", "case3", "case4")

# Table 2: test error %, mean and std over 5 runs (its baselines have no std).
PAPER_TABLE2 = {
    "mnist": {"baseline": (0.93, None), "case1": (0.43, 0.03), "case2": (0.73, 0.06), "case3": (0.70, 0.05),
              "case4": (0.69, 0.00)},
    "svhn": {"baseline": (4.05, None), "case1": (2.53, 0.06), "case2": (2.64, 0.11), "case3": (2.66, 0.07),
             "case4": (2.86, 0.07)},
    "cifar10": {"baseline": (6.81, None), "case1": (3.30, 0.06), "case2": (5.30, 0.14), "case3": (6.46, 0.08),
                "case4": (5.13, 0.09)},
}
PAPER_DEPTH = {"mnist": 10, "svhn": 28, "cifar10": 28}
# The default `depth` of a dataset: the paper's, else 10 for small digit images, else the paper's CIFAR net.
DEFAULT_DEPTH = {**PAPER_DEPTH, "digits": 10}
FALLBACK_DEPTH = 28

# Figures of the paper per dataset: (loss per epoch, auxiliary scores).
PAPER_FIGURES = {"mnist": ("Fig. 2", "Fig. 3"), "svhn": ("Fig. 4", "Fig. 5"), "cifar10": ("Fig. 6", "Fig. 7")}


def default_depth(dataset: str) -> int:
    """``depth: ${default_depth:${dataset.name}}`` in conf/config.yaml."""
    return DEFAULT_DEPTH.get(dataset, FALLBACK_DEPTH)
