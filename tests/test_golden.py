"""Golden outputs: one fixed-seed forward pass per family, stored in ``tests/golden/``.

A refactor that changes the numbers (layer order, padding, concatenation order, init) fails here.
To regenerate after an *intended* change: ``LITEZOO_REGENERATE_GOLDEN=1 pytest tests/test_golden.py``,
and say why in the commit.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from litezoo import nets

GOLDEN_DIR = Path(__file__).parent / "golden"
# One preset per family; small and large sizes alternate so both block depths are covered.
FAMILIES = ["unet_large_6f", "lunet_small_2f", "unetpp_small_1f", "lunetpp_large_6f", "mednext_small"]
SAMPLES = 256


def _golden_output(name: str, randomize_norms) -> tuple[list[int], torch.Tensor]:
    torch.manual_seed(1234)
    model = randomize_norms(nets.create(name, spatial_dims=3, in_channels=1, out_channels=2), seed=1234)
    d = model.divisor
    x = torch.randn(1, 1, d, 2 * d, d, generator=torch.Generator().manual_seed(4321))
    with torch.no_grad():
        y = model.eval()(x)
    return list(x.shape), y


@pytest.mark.parametrize("name", FAMILIES)
def test_golden_output(name, randomize_norms):
    shape, y = _golden_output(name, randomize_norms)
    flat = y.flatten()
    stride = max(1, flat.numel() // SAMPLES)
    record = {
        "preset": name,
        "input_shape": shape,
        "output_shape": list(y.shape),
        "mean": flat.mean().item(),
        "std": flat.std().item(),
        "stride": stride,
        "samples": flat[::stride].tolist(),
    }
    path = GOLDEN_DIR / f"{name}.json"
    if os.environ.get("LITEZOO_REGENERATE_GOLDEN") == "1":
        path.write_text(json.dumps(record, indent=1) + "\n")
        pytest.skip(f"regenerated {path.name}")
    golden = json.loads(path.read_text())
    assert golden["output_shape"] == record["output_shape"]
    assert golden["stride"] == stride
    torch.testing.assert_close(torch.tensor(record["samples"]), torch.tensor(golden["samples"]), atol=1e-4, rtol=1e-4)
    assert record["mean"] == pytest.approx(golden["mean"], abs=1e-5)
    assert record["std"] == pytest.approx(golden["std"], abs=1e-5)
