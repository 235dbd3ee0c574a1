"""Preprocessing as composable modules (more transforms arrive with the dataset formats issue)."""

from e2evision.transforms.augment import RandomFlips
from e2evision.transforms.normalize import ChannelNormalizer

__all__ = ["ChannelNormalizer", "RandomFlips"]
