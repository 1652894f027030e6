"""Sending a SEG to the destination, and the back-off between failed attempts.

Two kinds of destination, by what ``--destination`` looks like:

* ``HOST:PORT:AET``: a DICOM Storage SCP (the PACS), one C-STORE per SEG in its own association (pynetdicom);
* ``http://...`` or ``https://...``: a DICOMweb service root (``http://pacs/dicom-web``), one STOW-RS request per
  SEG (``POST {root}/studies``, ``multipart/related; type="application/dicom"``), with HTTP basic authentication
  when the URL carries ``user:password@``.

A failure is a :class:`SendError`, ``permanent`` when sending again cannot help (the destination refused the
instance itself), else the node retries with :func:`retry_delay`.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pynetdicom import AE

__all__ = ["CStoreDestination", "SendError", "StowDestination", "parse_destination", "retry_delay"]

logger = logging.getLogger(__name__)

TIMEOUT_S = 30.0  # connection, association, DIMSE and HTTP timeouts
# C-STORE statuses of a stored instance: success and the warnings (coercion, elements discarded, data set does not
# match SOP class)
STORED = {0x0000, 0xB000, 0xB006, 0xB007}
RETRIED_HTTP = {408, 425, 429}  # client errors that may pass later (timeout, too early, too many requests)
FAILED_SOP_SEQUENCE = "00081198"
FAILURE_REASON = "00081197"


class SendError(RuntimeError):
    """A send that failed; ``permanent`` when trying again cannot help (the destination refused the instance)."""

    def __init__(self, message: str, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


def retry_delay(attempts: int, base: float, most: float) -> float:
    """Seconds to wait after ``attempts`` failed sends: ``base``, doubled per attempt, at most ``most``."""
    return float(min(most, base * 2 ** max(attempts - 1, 0)))


@dataclass(frozen=True)
class CStoreDestination:
    """A DICOM Storage SCP.

    Attributes:
        host: host name or address.
        port: TCP port.
        ae_title: its AE title.
    """

    host: str
    port: int
    ae_title: str

    def __str__(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}"

    def send(self, path: str | os.PathLike, calling_aet: str) -> None:
        """C-STORE the DICOM file ``path`` (in its own transfer syntax) in one association.

        Raises:
            SendError: no association (refused, unreachable, timed out: try again later), or the destination
                answered a failure status (permanent for a refusal of the data set, 0xA9xx and 0xCxxx).
        """
        path = Path(path)
        header = pydicom.dcmread(path, stop_before_pixels=True)
        ae = AE(ae_title=calling_aet)
        ae.connection_timeout = ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = TIMEOUT_S
        ae.add_requested_context(header.SOPClassUID, header.file_meta.TransferSyntaxUID)
        assoc = ae.associate(self.host, self.port, ae_title=self.ae_title)
        if not assoc.is_established:
            raise SendError(f"no association with {self} (refused, unreachable or timed out)")
        try:
            status = assoc.send_c_store(path)
        finally:
            assoc.release()
        code = int(status.Status) if status and "Status" in status else None
        if code is None:
            raise SendError(f"{self} did not answer the C-STORE of {path.name} (connection lost or timed out)")
        if code not in STORED:
            permanent = (code & 0xFF00) == 0xA900 or (code & 0xF000) == 0xC000
            raise SendError(f"{self} refused {path.name}: C-STORE status 0x{code:04X}", permanent=permanent)


@dataclass(frozen=True)
class StowDestination:
    """A DICOMweb service that takes STOW-RS.

    Attributes:
        url: the service root without credentials (``http://pacs:8042/dicom-web``).
        authorization: the ``Authorization`` header value, or ``""``.
    """

    url: str
    authorization: str = ""

    def __str__(self) -> str:
        return self.url

    def send(self, path: str | os.PathLike, calling_aet: str) -> None:
        """POST the DICOM file ``path`` to ``{url}/studies`` (STOW-RS).

        Raises:
            SendError: the service cannot be reached, or answered an error (permanent for 4xx other than 408, 425
                and 429, and for an instance listed as failed in the response).
        """
        path = Path(path)
        boundary = uuid.uuid4().hex
        body = b"".join(
            [
                f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode(),
                path.read_bytes(),
                f"\r\n--{boundary}--\r\n".encode(),
            ]
        )
        headers = {
            "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
            "Accept": "application/dicom+json",
        }
        if self.authorization:
            headers["Authorization"] = self.authorization
        request = urllib.request.Request(f"{self.url}/studies", data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
                payload = response.read()
        except urllib.error.HTTPError as err:
            detail = err.read()[:500].decode(errors="replace")
            permanent = 400 <= err.code < 500 and err.code not in RETRIED_HTTP
            raise SendError(f"{self} answered HTTP {err.code} to {path.name}: {detail}", permanent=permanent) from err
        except (urllib.error.URLError, OSError) as err:
            raise SendError(f"{self} cannot be reached: {getattr(err, 'reason', err)}") from err
        try:
            answer = json.loads(payload) if payload.strip() else {}
        except json.JSONDecodeError:
            return  # a service that answers 200 without the JSON body stored the instance
        failed = answer.get(FAILED_SOP_SEQUENCE, {}).get("Value") if isinstance(answer, dict) else None
        if failed:
            reasons = [item.get(FAILURE_REASON, {}).get("Value", ["?"])[0] for item in failed]
            raise SendError(f"{self} did not store {path.name}: failure reasons {reasons}", permanent=True)


def parse_destination(text: str) -> CStoreDestination | StowDestination:
    """The destination of ``--destination``: ``HOST:PORT:AET`` or a DICOMweb URL (see the module docstring).

    Raises:
        ValueError: the text is neither.
    """
    text = str(text).strip()
    if text.lower().startswith(("http://", "https://")):
        parts = urllib.parse.urlsplit(text)
        if not parts.hostname:
            raise ValueError(f"--destination {text!r}: the DICOMweb URL has no host.")
        authorization = ""
        if parts.username is not None:
            credentials = f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}"
            authorization = "Basic " + base64.b64encode(credentials.encode()).decode()
        netloc = parts.hostname + (f":{parts.port}" if parts.port else "")
        url = urllib.parse.urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))
        return StowDestination(url, authorization)
    pieces = text.rsplit(":", 2)
    if len(pieces) != 3 or not pieces[0] or not pieces[1].isdigit() or not 0 < int(pieces[1]) < 65536:
        raise ValueError(
            f"--destination {text!r} is neither HOST:PORT:AET (for example 127.0.0.1:4242:ORTHANC) nor a DICOMweb "
            "URL (http://host:8042/dicom-web)."
        )
    if not 0 < len(pieces[2]) <= 16:
        raise ValueError(f"--destination {text!r}: the AE title must have 1 to 16 characters.")
    return CStoreDestination(pieces[0], int(pieces[1]), pieces[2])
