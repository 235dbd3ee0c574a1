"""Model zoo behind one registry (``create_model``, ``list_models``), as in timm."""

from e2evision.models import resnet15, vit  # noqa: F401  (registers the models)
from e2evision.models.registry import (
    count_parameters,
    create_model,
    get_entry,
    list_models,
    model_table,
    register_model,
)

__all__ = ["count_parameters", "create_model", "get_entry", "list_models", "model_table", "register_model"]
