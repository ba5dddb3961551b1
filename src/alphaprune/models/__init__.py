"""Model registry and architectures."""

from alphaprune.models.registry import create_model, list_models, register_model
from alphaprune.models import vgg  # noqa: F401  (registers the VGG family)

__all__ = ["create_model", "list_models", "register_model"]
