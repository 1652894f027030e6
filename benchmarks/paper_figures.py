"""Headline figures the papers report, and the setting they were measured in, for comparison with ours.

Each entry: the paper's input ``(channels, *spatial)`` and classes, parameters, MACs and how the paper counted them.
``tolerance`` is how close our model must come to the figure (tested): LMSC-UNet and LSU-Net are reconstructions
calibrated to it (no public code); LV-UNet follows its public code exactly (934,545 parameters), and thop counts
0.219 G MACs for it once the series activation's depthwise convs are modules (the public code calls them
functionally, which module-hook counters miss; hence the 0.16-0.21 G of other counts).
``counter`` names the counter to compare with: ``"thop"`` (the ``thop`` package: BN and other layers included,
transposed convs on the output size) or ``"flop_counter"`` (:func:`litezoo.tools.profiling.count_macs`: convolutions and
matrix multiplies only).
"""

from __future__ import annotations

__all__ = ["PAPER_FIGURES"]

PAPER_FIGURES: dict[str, dict] = {
    "lmsc_unet": {
        "source": "Sawant et al., ICAART 2025, Tables 1 and 3 (LMSC-UNet-2, BRB at level 2)",
        "input": (3, 256, 256),
        "out_channels": 1,
        "params": 0.91e6,
        "macs": 8.2e9,
        "counter": "thop",
        "tolerance": {"params": 0.05, "macs": 0.10},
    },
    "lsu_net": {
        "source": "Ding et al., ICASSP 2025, Table 1 (UWMGI: background + 3 organs)",
        "input": (3, 224, 224),
        "out_channels": 4,
        "params": 1.08e6,
        "macs": 1.10e9,
        "counter": "flop_counter",
        "tolerance": {"params": 0.05, "macs": 0.10},
    },
    "lv_unet": {
        "source": "Jiang et al., IEEE BIBM 2024, Table II (training mode; 0.5 M / 0.20 G deployed)",
        "input": (3, 256, 256),
        "out_channels": 1,
        "params": 0.9e6,
        "macs": 0.22e9,
        "counter": "thop",
        "tolerance": {"params": 0.05, "macs": 0.05},
        "deploy": {"params": 0.5e6, "macs": 0.20e9},
    },
}
