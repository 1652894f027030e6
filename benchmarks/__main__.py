"""``python -m benchmarks <name> [--flags]`` (python-fire), run from the repository root."""

from __future__ import annotations

import logging

import fire

from benchmarks.inference import benchmark_inference
from benchmarks.networks import benchmark_networks
from benchmarks.pipeline import benchmark_pipeline
from benchmarks.precision import benchmark_precision
from benchmarks.sharding import benchmark_sharding
from benchmarks.soak import benchmark_soak
from benchmarks.training import benchmark_training

COMMANDS = {
    "networks": benchmark_networks,
    "training": benchmark_training,
    "inference": benchmark_inference,
    "pipeline": benchmark_pipeline,
    "precision": benchmark_precision,
    "soak": benchmark_soak,
    "sharding": benchmark_sharding,
}

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    fire.Fire(COMMANDS, name="python -m benchmarks")
