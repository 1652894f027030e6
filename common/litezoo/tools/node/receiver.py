"""The DICOM node's Storage SCP (pynetdicom): CT and MR images in, each on disk before it is acknowledged.

It accepts Verification (C-ECHO) and CT Image Storage and MR Image Storage (C-STORE) in every transfer syntax that
the bundle's reader can decode (uncompressed; RLE, JPEG, JPEG-LS and JPEG 2000 where a pydicom decoder plugin is
installed). Only the AE title given is answered (``require_called_aet``) and, with an allow-list, only the calling AE
titles on it (``require_calling_aet``; others get an association rejection).

Each C-STORE is decoded far enough to read its UIDs and written by :meth:`litezoo.tools.node.spool.Spool.store_instance`
as the DICOM file the peer sent (preamble, file meta information with the negotiated transfer syntax, the data set
bytes as received): the success status goes back only after the file is ``fsync``'d and renamed. What cannot be
stored gets a failure status and a log line naming the peer and the problem, and the association goes on:
an undecodable data set (0xC210), one without valid Study, Series or SOP Instance UIDs or whose SOP class is not
the one negotiated (0xA900), a full or failing disk (0xA700).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from pydicom.uid import UID
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, evt
from pynetdicom.sop_class import CTImageStorage, MRImageStorage, Verification

from litezoo.runtime.dicom import decoder_problem
from litezoo.tools.node.spool import Spool, is_uid

__all__ = ["STORAGE_CLASSES", "StorageSCP", "readable_syntaxes"]

logger = logging.getLogger(__name__)

STORAGE_CLASSES = (CTImageStorage, MRImageStorage)
SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700
DATA_SET_DOES_NOT_MATCH = 0xA900
CANNOT_UNDERSTAND = 0xC210


def readable_syntaxes() -> list[str]:
    """The transfer syntaxes whose pixel data the bundle's reader decodes here, uncompressed ones first."""
    syntaxes = [UID(uid) for uid in ALL_TRANSFER_SYNTAXES]
    readable = [uid for uid in syntaxes if decoder_problem(uid) is None]
    return sorted(readable, key=lambda uid: (uid.is_compressed, syntaxes.index(uid)))


class StorageSCP:
    """A Storage SCP writing into a :class:`~litezoo.tools.node.spool.Spool`.

    Args:
        spool: the work directory.
        ae_title: this node's AE title.
        host: the address to listen on.
        port: the TCP port.
        allowed_aets: the calling AE titles accepted; ``None`` or empty accepts any.
        on_stored: called with the series UID after each stored instance.
    """

    def __init__(
        self,
        spool: Spool,
        ae_title: str,
        host: str,
        port: int,
        allowed_aets: list[str] | None = None,
        on_stored: Callable[[str], None] | None = None,
    ) -> None:
        self.spool = spool
        self.address = (host, int(port))
        self.on_stored = on_stored
        self.ae = AE(ae_title=ae_title)
        self.ae.require_called_aet = True
        if allowed_aets:
            self.ae.require_calling_aet = list(allowed_aets)
        syntaxes = readable_syntaxes()
        for storage_class in STORAGE_CLASSES:
            self.ae.add_supported_context(storage_class, syntaxes)
        self.ae.add_supported_context(Verification)
        self.ae.maximum_associations = 16
        self.server: Any = None

    def start(self) -> None:
        """Listen (in pynetdicom's threads) until :meth:`stop`."""
        handlers = [
            (evt.EVT_C_STORE, self._store),
            (evt.EVT_REJECTED, self._rejected),
            (evt.EVT_ABORTED, self._aborted),
        ]
        self.server = self.ae.start_server(self.address, block=False, evt_handlers=handlers)
        self.address = tuple(self.server.server_address[:2])  # the port the system chose for port 0
        logger.info("listening as %s on %s:%d", self.ae.ae_title, *self.address)

    def stop(self) -> None:
        """Stop listening and close the open associations."""
        if self.server is not None:
            self.server.shutdown()
            self.server = None

    @staticmethod
    def _peer(event: Any) -> str:
        requestor = event.assoc.requestor
        return f"{requestor.ae_title}@{requestor.address}:{requestor.port}"

    def _rejected(self, event: Any) -> None:
        logger.warning("association from %s rejected (called or calling AE title not accepted)", self._peer(event))

    def _aborted(self, event: Any) -> None:
        logger.warning("association from %s aborted; the instances acknowledged before are kept", self._peer(event))

    def _store(self, event: Any) -> int:
        """Handle one C-STORE: the status goes back after the instance is on disk (module docstring)."""
        peer = self._peer(event)
        try:
            dataset = event.dataset
            study, series, sop = (str(dataset.get(k, "")) for k in ("StudyInstanceUID", "SeriesInstanceUID",
                                                                       "SOPInstanceUID"))  # fmt: skip
            sop_class = str(dataset.get("SOPClassUID", ""))
            modality = str(dataset.get("Modality", ""))
        except Exception as err:  # noqa: BLE001 - any decoding failure is the peer's malformed data set
            logger.warning("C-STORE from %s refused: the data set cannot be decoded (%s)", peer, err)
            return CANNOT_UNDERSTAND
        if not (is_uid(study) and is_uid(series) and is_uid(sop)):
            logger.warning(
                "C-STORE from %s refused: Study/Series/SOP Instance UID %r/%r/%r missing or invalid", peer, study,
                series, sop,
            )  # fmt: skip
            return DATA_SET_DOES_NOT_MATCH
        if sop_class != event.context.abstract_syntax:
            logger.warning(
                "C-STORE from %s refused: SOP Class %s of %s is not the negotiated %s", peer, sop_class, sop,
                event.context.abstract_syntax,
            )  # fmt: skip
            return DATA_SET_DOES_NOT_MATCH
        record = {"study_uid": study, "modality": modality, "calling_aet": event.assoc.requestor.ae_title}
        try:
            self.spool.store_instance(series, sop, event.encoded_dataset(include_meta=True), record)
        except OSError as err:
            logger.error("C-STORE from %s of %s not stored: %s", peer, sop, err)
            return OUT_OF_RESOURCES
        if self.on_stored is not None:
            self.on_stored(series)
        return SUCCESS
