"""Every registered model × every dataset geometry, and the documented table of models.

Each model-specific test file checks its architecture against its definition; this one checks the
uniform contract on whatever is registered, so a new model cannot skip it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from e2evision.models import count_parameters, create_model, get_entry, list_models
from e2evision.models.catalog import (
    BEGIN,
    END,
    GEOMETRIES,
    catalog_markdown,
    catalog_rows,
    parse_catalog_markdown,
)

DOCS = Path(__file__).resolve().parents[1] / "docs" / "models.md"
# Full-size presets are swept on CPU at batch 1 only on the smallest and largest geometry; their
# micro counterparts (same code) take the whole sweep. Keeps the suite within CI's budget.
IMAGE_MODELS = [n for n in list_models() if get_entry(n).family != "scalars"]
LARGE = {n for n in IMAGE_MODELS if not n.endswith("micro")} - {"resnet15", "simple_cnn", "lenet5"}
CASES = [
    (name, c, s) for name in IMAGE_MODELS for (c, s) in GEOMETRIES if name not in LARGE or (c, s) in {(2, 32), (1, 150)}
]


@pytest.mark.parametrize("name,in_chans,size", CASES, ids=[f"{n}-{c}x{s}" for n, c, s in CASES])
def test_contract(name, in_chans, size):
    torch.manual_seed(0)
    model = create_model(name, in_chans=in_chans, img_size=size, num_outputs=3)
    batch = 1 if name in LARGE else 2
    x = torch.randn(batch, in_chans, size, size)
    model.train()
    out = model(x)
    assert out.shape == (batch, 3)
    out.square().sum().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads), "missing/NaN gradients"
    model.eval()
    with torch.no_grad():
        first, second = model(x), model(x)
    torch.testing.assert_close(first, second, rtol=0, atol=0)
    assert model.num_features > 0 and model.head.num_outputs == 3


@pytest.mark.parametrize("name", IMAGE_MODELS)
def test_scalar_fusion_and_reset(name):
    model = create_model(name, in_chans=2, img_size=32, num_outputs=1, num_scalars=2).eval()
    x, s = torch.randn(2, 2, 32, 32), torch.randn(2, 2)
    with torch.no_grad():
        assert model(x, s).shape == (2, 1)
    model.reset_classifier(5)
    with torch.no_grad():
        assert model(x, s).shape == (2, 5)


def test_documented_table_matches_the_code():
    """docs/models.md holds `e2evision models --markdown`; every count must equal the code's."""
    documented = parse_catalog_markdown(DOCS.read_text(encoding="utf-8"))
    rows = catalog_rows()
    assert sorted(documented) == sorted(r["name"] for r in rows), "docs/models.md lists other models"
    for r in rows:
        assert documented[r["name"]] == r["params"], r["name"]
    # meta-device counts equal real ones (spot check)
    assert count_parameters(create_model("resnet15", in_chans=8, img_size=125)) == documented["resnet15"]["8x125x125"]
    text = DOCS.read_text(encoding="utf-8")
    assert text.split(BEGIN, 1)[1].split(END, 1)[0].strip() == catalog_markdown(rows)
