"""Hierarchical Auxiliary Learning (Cha et al., 2019) on PyTorch Lightning + Hydra."""
