"""Model zoo behind one registry (``create_model``, ``list_models``), as in timm."""

# Importing a module registers its models.
from e2evision.models import cnn, coatnet, deit, hybrid, mlp, resnet15, swin, vit, vit_sd  # noqa: F401
from e2evision.models.registry import (
    count_flops,
    count_parameters,
    create_model,
    get_entry,
    list_models,
    model_table,
    register_model,
)

__all__ = [
    "count_flops",
    "count_parameters",
    "create_model",
    "get_entry",
    "list_models",
    "model_table",
    "register_model",
]
