"""The runtime a bundle executes: what ``train.json``, ``inference.json`` and their overlays name.

Data discovery and input checks (``data``), transforms, losses, folder inference that survives bad cases
(``engines``), windowing and the network's runtime (``inference``), ignite handlers, checkpoints, label-map writers
and export records. It imports :mod:`litezoo.nets` and never :mod:`litezoo.tools`; a shared bundle zip vendors this
package and :mod:`litezoo.nets`, nothing else.
"""
