"""Tools around the bundles: the ``litezoo`` command line, bundle generation, verification, export and packaging,
the demo and the figures. Nothing a bundle executes lives here: tools import :mod:`litezoo.runtime` and
:mod:`litezoo.nets`, never the reverse.
"""
