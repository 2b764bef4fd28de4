"""What a method is: parts the network builds in, and a training loss of what the network returns.

``PreActResNet`` returns a ``NetOutput``: the main head's logits plus named extras (HAL's auxiliary
score a and projection z, the logits of extra heads). A method (``conf/method/*.yaml``) is a ``Method``
subclass: ``attach`` adds its parts to the network (``net.add_tap``: a module fed one stage's output,
whose result lands in ``NetOutput.extras``), ``loss`` turns the output and the batch into the training
loss. ``HALModule`` only calls these two, so a new method needs no edit to the module.
"""
from dataclasses import dataclass, field
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class NetOutput:
    logits: torch.Tensor                                   # (B, K): the main head, the one that is tested
    auxiliary_score: Optional[torch.Tensor] = None         # a (B, 1), equation 3; None without the block
    auxiliary_projection: Optional[torch.Tensor] = None    # z = W·y (B, S); None without the block
    extras: dict[str, torch.Tensor] = field(default_factory=dict)  # extra heads' outputs, by tap name


class Method:
    """HAL: cross-entropy on the main head, with the auxiliary block at ``position`` (3: the paper's place,
    after the last stage; 1, 2: after that stage). With ``case=baseline`` (no superclasses) the same method
    is the plain network, so the baseline is this class too.

    Subclasses set ``auxiliary = False`` when they never use HAL's block, ``needs_superclasses = True`` when
    they cannot run without a case, and override ``attach`` and ``loss``.
    """

    auxiliary: bool = True
    needs_superclasses: bool = False
    # extras names holding extra class logits (B, K) and superclass logits (B, S), shallow first, so the
    # module can log and evaluate any method's extra heads without knowing the method
    class_taps: tuple[str, ...] = ()
    superclass_taps: tuple[str, ...] = ()
    # the run's class tree (its case's ``src.data.tree.ClassTree``), set by ``build()`` before ``attach``; None without
    # a case. Tree-using methods (HXE, soft labels, HAFrame) read it; they set ``needs_superclasses``.
    tree = None
    # Lightning callbacks the method needs (HAFrame's, to learn the epoch); ``build()`` adds them to the run's
    callbacks: tuple = ()

    def __init__(self, name: str = "hal", position: int = 3) -> None:
        self.name, self.position = name, position

    def attach(self, net: nn.Module, num_classes: int, num_superclasses: int) -> None:
        """Add this method's parts to ``net`` (after its own initialisation). HAL adds none."""

    def loss(self, output: NetOutput, label: torch.Tensor, superclass: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(output.logits, label)

    def loss_scale(self) -> float:
        """How many times smaller than cross-entropy's this method's loss is, as its official code computes it
        (1: the same scale). ``lr_rule=loss_scale`` multiplies the shared learning rate by it (docs/methods.md)."""
        return 1.0
