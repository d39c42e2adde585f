"""The GGPM method: gradient-guided masks, the masked checkpoint format and training."""

from gpmask.masking.checkpoint import MaskDensity, MaskedCheckpoint, resolve_checkpoint

__all__ = ["MaskDensity", "MaskedCheckpoint", "resolve_checkpoint"]
