"""Model registry and architectures."""

from alphaprune.models import resnet, vgg  # noqa: F401  (register the ResNet and VGG families)
from alphaprune.models.registry import create_model, list_models, register_model

__all__ = ["create_model", "list_models", "register_model"]
