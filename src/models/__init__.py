from src.models.auxiliary import AuxiliaryBlock
from src.models.resnet import PreActResNet

__all__ = ["AuxiliaryBlock", "PreActResNet"]
