"""Model registry and architectures."""

from alphaprune.models import mobilenet, resnet, vgg  # noqa: F401  (register the families)
from alphaprune.models.registry import create_model, list_models, register_model

__all__ = ["create_model", "list_models", "register_model"]
