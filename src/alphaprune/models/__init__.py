"""Model registry and architectures."""

from alphaprune.models import vgg  # noqa: F401  (registers the VGG family)
from alphaprune.models.registry import create_model, list_models, register_model

__all__ = ["create_model", "list_models", "register_model"]
