"""The ``litezoo`` command line (python-fire): ``litezoo <group> <command> [--flags]``.

Commands are an explicit table, so only what is listed here is exposed. The benchmarks are not part of the installed
library: run them from a checkout with ``python -m benchmarks <name>`` (see ``benchmarks/__main__.py``).
"""

from __future__ import annotations

import logging

import fire

from litezoo.tools.bundles.generate import generate_bundles
from litezoo.tools.bundles.package import package_bundles, unpack_bundle
from litezoo.tools.bundles.verify import verify_bundles
from litezoo.tools.curves import plot_curves
from litezoo.tools.demo import run_demo
from litezoo.tools.export import export_bundles
from litezoo.tools.node.service import serve
from litezoo.tools.quantize import run_quantize
from litezoo.tools.visualize import plot_overlays

__all__ = ["COMMANDS", "main"]

COMMANDS = {
    "bundles": {
        "generate": generate_bundles,
    },
    "verify": verify_bundles,
    "export": export_bundles,
    "quantize": run_quantize,
    "package": package_bundles,
    "unpack": unpack_bundle,
    "demo": run_demo,
    "serve": serve,
    "visualize": {
        "overlays": plot_overlays,
        "curves": plot_curves,
    },
}


def main() -> None:
    """Entry point of ``litezoo`` and ``python -m litezoo``."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    fire.Fire(COMMANDS, name="litezoo")
