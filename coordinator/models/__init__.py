"""Model specs (JSON layer lists shared with the Burn trainer) and their PyTorch form."""

from coordinator.models.spec import BUILTIN_MODELS, ModelSpec, load_spec

__all__ = ["BUILTIN_MODELS", "ModelSpec", "load_spec"]
