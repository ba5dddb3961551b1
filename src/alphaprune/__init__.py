"""alphaprune: compress pretrained CNNs by objective selection."""

from alphaprune.errors import UserError
from alphaprune.modelfile import load_model, save_model
from alphaprune.models import create_model, list_models

__all__ = ["UserError", "create_model", "list_models", "load_model", "save_model"]
__version__ = "0.1.0"
