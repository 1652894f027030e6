"""Our reconstructions against the papers' headline parameter and MAC counts, in the papers' own settings.

Generated from :data:`benchmarks.paper_figures.PAPER_FIGURES`; entries with tolerances are calibrated targets.
"""

from __future__ import annotations

import pytest
import torch

from benchmarks.paper_figures import PAPER_FIGURES
from litezoo import nets
from litezoo.tools.profiling import count_macs, count_macs_thop, count_parameters

COUNTERS = {"flop_counter": count_macs, "thop": count_macs_thop}
CALIBRATED = [name for name, fig in PAPER_FIGURES.items() if "tolerance" in fig]


def test_every_figure_names_a_preset_and_a_counter():
    for name, figure in PAPER_FIGURES.items():
        assert name in nets.list_presets()
        assert figure["counter"] in COUNTERS


@pytest.mark.parametrize("name", CALIBRATED)
def test_calibrated_to_paper(name):
    figure = PAPER_FIGURES[name]
    channels, *spatial = figure["input"]
    model = nets.create(name, spatial_dims=len(spatial), in_channels=channels, out_channels=figure["out_channels"])
    params = count_parameters(model)
    macs = COUNTERS[figure["counter"]](model, torch.zeros(1, channels, *spatial))
    tolerance = figure["tolerance"]
    assert abs(params / figure["params"] - 1) <= tolerance["params"], params
    assert abs(macs / figure["macs"] - 1) <= tolerance["macs"], macs
