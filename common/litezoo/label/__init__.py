"""MONAI Label support files: ``requirements.txt`` (the MONAI Label 0.8.5 environment, on MONAI 1.5.x) and
``tasks.py`` (runs MONAI Label's own ``BundleInferTask`` and ``BundleTrainTask`` on bundle folders in that
environment). Neither imports ``litezoo``: the bundles bring their vendored copy (``litezoo package``).
"""
