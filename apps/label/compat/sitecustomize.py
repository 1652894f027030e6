"""Lets MONAI Label 0.8.5's server start on pydicom 3: put this folder on ``PYTHONPATH`` of ``monailabel start_server``.

The server imports pydicom-seg 0.4.1 at start (for its DICOM SEG conversions), and pydicom-seg imports
``SegmentationStorage`` from ``pydicom._storage_sopclass_uids``, a module pydicom 3 removed (the UIDs are in
``pydicom.uid`` since pydicom 2.3). LiteZoo bundles need pydicom 3 (their DICOM reader uses ``pydicom.pixels``), so
the environment keeps pydicom 3 and this module answers that one import instead.

Python imports ``sitecustomize`` from ``sys.path`` at start-up, so every process of the server gets it: the server
itself and the training processes it starts, which inherit its ``PYTHONPATH``. It only adds an import finder, last
in ``sys.meta_path`` (a pydicom that still has the module is used as it is), which builds the module from
``pydicom.uid``'s storage UIDs when it is imported (pydicom is not imported at start-up). It takes the place of any
other ``sitecustomize`` module further down ``sys.path``.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import sys
from collections.abc import Sequence
from types import ModuleType

MODULE = "pydicom._storage_sopclass_uids"


class StorageSopClassUids(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds and loads ``pydicom._storage_sopclass_uids`` as the ``...Storage`` UIDs of ``pydicom.uid``."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None = None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        """A spec for ``MODULE`` (loaded by this object), ``None`` for every other name."""
        return importlib.util.spec_from_loader(fullname, self) if fullname == MODULE else None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> None:
        """The default module creation."""
        return None

    def exec_module(self, module: ModuleType) -> None:
        """Fill ``module`` with every ``...Storage`` UID of ``pydicom.uid``."""
        import pydicom.uid

        for name in dir(pydicom.uid):
            if name.endswith("Storage"):
                setattr(module, name, getattr(pydicom.uid, name))


sys.meta_path.append(StorageSopClassUids())
