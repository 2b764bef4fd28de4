"""The auxiliary block of Hierarchical Auxiliary Learning (paper section 3, equations 2-7)."""
import torch
from torch import nn


class AuxiliaryBlock(nn.Module):
    """Scale features by an auxiliary score computed from the one-hot superclass.

    With ``y`` the output of the last residual block (B, l), ``x*`` the one-hot superclass (B, s)
    and ``w`` an l×s linear map without bias::

        z_j = Σ_i w_ij · y_i
        a   = Σ_j | z_j − x*_j |          (3)
        y^{N-1} = y · a                    (2)

    Autograd reproduces the paper's backward pass (4)-(7), where χ_j = sign(z_j − x*_j).
    Before the last stage (``method.position`` 1 or 2) ``y`` is a feature map (B, l, H, W): z is computed
    from its global average, and the whole map is scaled by a.
    """

    def __init__(self, in_features: int, num_superclasses: int) -> None:
        super().__init__()
        if num_superclasses < 1:
            raise ValueError(f"num_superclasses must be >= 1, got {num_superclasses}")
        self.in_features = in_features
        self.num_superclasses = num_superclasses
        self.linear = nn.Linear(in_features, num_superclasses, bias=False)  # w_ij, no bias (paper)

    def project(self, y: torch.Tensor) -> torch.Tensor:
        """z = W·y, shape (B, s); a feature map is globally average-pooled first."""
        return self.linear(y.mean((2, 3)) if y.dim() == 4 else y)

    @staticmethod
    def score(z: torch.Tensor, x_star: torch.Tensor) -> torch.Tensor:
        return (z - x_star).abs().sum(dim=1, keepdim=True)  # (3): (B, 1)

    def scale(self, y: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        return y * (a.view(-1, 1, 1, 1) if y.dim() == 4 else a)  # (2)

    def forward(self, y: torch.Tensor, x_star: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a = self.score(self.project(y), x_star)
        return self.scale(y, a), a
