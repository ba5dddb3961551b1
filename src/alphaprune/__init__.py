"""alphaprune: compress pretrained CNNs by objective selection."""

# first, before anything loads torch: OpenMP reads its wait policy once (alphaprune.openmp)
from alphaprune.openmp import short_spin

short_spin()

from alphaprune.errors import UserError  # noqa: E402
from alphaprune.modelfile import load_model, save_model  # noqa: E402
from alphaprune.models import create_model, list_models  # noqa: E402

__all__ = ["UserError", "create_model", "list_models", "load_model", "save_model"]
__version__ = "0.1.0"
