"""The ``litezoo`` command line (python-fire): ``litezoo <group> <command> [--flags]``.

Commands are an explicit table, so only what is listed here is exposed. Later groups (``verify``, ``export``,
``package``, ``visualize``) are added to :data:`COMMANDS`.
"""

from __future__ import annotations

import logging

import fire

from litezoo.benchmarks.inference import benchmark_inference
from litezoo.benchmarks.networks import benchmark_networks
from litezoo.benchmarks.pipeline import benchmark_pipeline
from litezoo.benchmarks.soak import benchmark_soak
from litezoo.benchmarks.training import benchmark_training
from litezoo.bundle.export import export_bundles
from litezoo.bundle.generate import generate_bundles
from litezoo.bundle.package import package_bundles, unpack_bundle
from litezoo.bundle.verify import verify_bundles
from litezoo.curves import plot_curves
from litezoo.quickstart import run_demo
from litezoo.visualize import plot_overlays

__all__ = ["COMMANDS", "main"]

COMMANDS = {
    "benchmark": {
        "networks": benchmark_networks,
        "training": benchmark_training,
        "inference": benchmark_inference,
        "pipeline": benchmark_pipeline,
        "soak": benchmark_soak,
    },
    "bundles": {
        "generate": generate_bundles,
    },
    "verify": verify_bundles,
    "export": export_bundles,
    "package": package_bundles,
    "unpack": unpack_bundle,
    "demo": run_demo,
    "visualize": {
        "overlays": plot_overlays,
        "curves": plot_curves,
    },
}


def main() -> None:
    """Entry point of ``litezoo`` and ``python -m litezoo``."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    fire.Fire(COMMANDS, name="litezoo")
