"""Real DICOM network peers for the node's tests, all on 127.0.0.1 and started by the tests themselves.

* :class:`Orthanc`: the Debian package's ``Orthanc`` server as the destination PACS, with a generated configuration
  (its own storage folder, HTTP and DICOM ports, no plugins, remote access off); its REST API says what arrived.
* :class:`Node`: ``python -m litezoo serve`` as a separate process (so that it can be killed with SIGKILL), on a
  port the system chooses (``--port 0``; the node writes it to ``status.json``).
* :func:`storescu`: dcmtk's ``storescu`` as the sending modality; :func:`pynetdicom_send` as a second client.

A program that is not installed skips the test with a message naming its Debian package; ``.ci/run`` installs them.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
DEBIAN_PACKAGES = {"Orthanc": "orthanc", "storescu": "dcmtk", "echoscu": "dcmtk"}
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")  # Debian package orthanc-dicomweb
NODE_AET = "LITEZOO"
PACS_AET = "ORTHANC"


def need(program: str) -> str:
    """The path of ``program``; skip the test, naming its Debian package, when it is not installed."""
    path = shutil.which(program) or shutil.which(program, path="/usr/sbin:/usr/bin")
    if path is None:
        package = DEBIAN_PACKAGES.get(program, program)
        pytest.skip(f"{program} is not installed (Debian package {package}: apt-get install {package}; .ci/run does)")
    return path


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (a server that then fails to bind it is started again on another)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.2) -> Any:
    """Poll ``condition`` until it returns something true; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


class Orthanc:
    """An Orthanc server in ``folder`` (configuration, storage, log).

    Args:
        folder: its folder (created).
        dicom_port: the DICOM port; a free one by default (kept across restarts, so senders can retry).
        dicomweb: load the DICOMweb plugin (``/dicom-web/``); skips the test when it is not installed.
    """

    def __init__(self, folder: Path, dicom_port: int | None = None, dicomweb: bool = False) -> None:
        if dicomweb and not DICOMWEB_PLUGIN.is_file():
            pytest.skip(f"{DICOMWEB_PLUGIN} is not installed (Debian package orthanc-dicomweb; .ci/run installs it)")
        self.dicomweb = dicomweb
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.dicom_port = dicom_port or free_port()
        self.http_port = free_port()
        self.process: subprocess.Popen | None = None

    @property
    def destination(self) -> str:
        """``HOST:PORT:AET`` for ``litezoo serve --destination``."""
        return f"127.0.0.1:{self.dicom_port}:{PACS_AET}"

    @property
    def dicomweb_url(self) -> str:
        """The DICOMweb service root, for ``litezoo serve --destination``."""
        return f"http://127.0.0.1:{self.http_port}/dicom-web"

    def _config(self) -> Path:
        config = {
            "Name": "litezoo-test-pacs",
            "StorageDirectory": str(self.folder / "storage"),
            "IndexDirectory": str(self.folder / "storage"),
            "HttpPort": self.http_port,
            "DicomPort": self.dicom_port,
            "DicomAet": PACS_AET,
            "DicomCheckCalledAet": True,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "Plugins": [str(DICOMWEB_PLUGIN)] if self.dicomweb else [],
            "DicomWeb": {"Enable": self.dicomweb, "Root": "/dicom-web/"},
            "LuaScripts": [],
            "SaveJobs": False,
            "DicomModalities": {},
        }
        path = self.folder / "orthanc.json"
        path.write_text(json.dumps(config, indent=1))
        return path

    def start(self, attempts: int = 3) -> Orthanc:
        """Start it and wait for its REST API; on a port taken meanwhile, again on another HTTP port."""
        program = need("Orthanc")
        for attempt in range(attempts):
            log = (self.folder / "orthanc.log").open("ab")
            self.process = subprocess.Popen(
                [program, str(self._config())], stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
            log.close()
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and self.process.poll() is None:
                if self._answers():
                    return self
                time.sleep(0.2)
            self.stop()
            self.http_port = free_port()
            if attempt == attempts - 2:
                self.dicom_port = free_port()
        raise AssertionError(f"Orthanc did not start; see {self.folder / 'orthanc.log'}")

    def _answers(self) -> bool:
        try:
            return self.get("/system").get("DicomPort") == self.dicom_port
        except (OSError, ValueError):
            return False

    def stop(self) -> None:
        """Stop it (SIGTERM, then SIGKILL)."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.process = None

    def get(self, path: str) -> Any:
        """GET ``path`` of the REST API as JSON."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}{path}", timeout=10) as response:
            return json.loads(response.read())

    def segs(self) -> list[dict[str, Any]]:
        """Every SEG instance stored: its SOP Instance UID and the series it references (ReferencedSeriesSequence)."""
        found = []
        for instance in self._find_segs():
            tags = self.get(f"/instances/{instance}/simplified-tags")
            referenced = [item["SeriesInstanceUID"] for item in tags.get("ReferencedSeriesSequence", [])]
            found.append({"sop_uid": tags["SOPInstanceUID"], "referenced_series": referenced, "tags": tags})
        return found

    def _find_segs(self) -> list[str]:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.http_port}/tools/find",
            data=json.dumps({"Level": "Instance", "Query": {"Modality": "SEG"}}).encode(),
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def file(self, instance_uid: str, path: Path) -> Path:
        """Download the stored instance ``instance_uid`` to ``path``."""
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.http_port}/tools/lookup", data=instance_uid.encode(), method="POST"
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            (orthanc_id,) = [item["ID"] for item in json.loads(response.read()) if item["Type"] == "Instance"]
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/instances/{orthanc_id}/file") as response:
            path.write_bytes(response.read())
        return path


class Node:
    """``litezoo serve`` as a separate process.

    Args:
        bundle: the bundle folder.
        workdir: its work directory (kept across restarts).
        destination: ``HOST:PORT:AET``.
        options: more command-line options (``["--quiet_period", "2"]``...).
    """

    def __init__(self, bundle: Path, workdir: Path, destination: str, options: Sequence[str] = ()) -> None:
        self.bundle, self.workdir, self.destination = Path(bundle), Path(workdir), destination
        self.options = list(options)
        self.process: subprocess.Popen | None = None
        self.port = 0
        self.log = self.workdir.parent / f"{self.workdir.name}.log"
        self.peak_rss_mib: list[float] = []  # per process started, the peak it reported last

    def start(self, timeout: float = 120) -> Node:
        """Start it and wait until it listens (its ``status.json`` names this process and its port)."""
        command = [
            sys.executable, "-m", "litezoo", "serve", str(self.bundle), "--destination", self.destination,
            "--port", "0", "--host", "127.0.0.1", "--ae_title", NODE_AET, "--workdir", str(self.workdir),
            "--backend", "torch", "--threads", "1", *self.options,
        ]  # fmt: skip
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        pid = self.process.pid

        def listening() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"litezoo serve exited with {self.process.returncode}:\n{self.tail()}")
            status = self.status()
            return bool(status) and status.get("pid") == pid

        wait_for(listening, timeout, "litezoo serve to listen")
        self.port = int(self.status()["address"][1])
        return self

    def status(self) -> dict[str, Any]:
        """``status.json`` (empty before the first write)."""
        try:
            return json.loads((self.workdir / "status.json").read_text())
        except (OSError, json.JSONDecodeError):
            return {}

    def count(self, state: str) -> int:
        """Jobs in ``state`` by the work directory itself (``status.json`` lags up to a second)."""
        return sum(1 for p in (self.workdir / state).iterdir() if p.is_dir() and not p.name.startswith("."))

    def kill9(self) -> None:
        """SIGKILL, as a crash or the OOM killer would."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(30)
        self.process = None

    def stop(self) -> int | None:
        """SIGTERM and wait; returns the exit status (None when it was not running)."""
        if self.process is None:
            return None
        self.peak_rss_mib.append(float(self.status().get("peak_rss_mib") or 0.0))
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(30)
        code, self.process = self.process.returncode, None
        return code

    def tail(self, lines: int = 60) -> str:
        """The end of its log."""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:]) if self.log.exists() else ""


def storescu(port: int, files: Sequence[Path], calling_aet: str = "CT_SCANNER", check: bool = True) -> str:
    """Send ``files`` with dcmtk's ``storescu`` (one association) to the node on ``port``; returns its output."""
    program = need("storescu")
    # -xs: propose JPEG Lossless SV1 besides the uncompressed syntaxes, as a modality set up for lossless sends
    command = [program, "-xs", "-aet", calling_aet, "-aec", NODE_AET, "127.0.0.1", str(port), *map(str, files)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    if check:
        assert result.returncode == 0, f"storescu failed ({result.returncode}):\n{result.stdout}{result.stderr}"
    return result.stdout + result.stderr


def pynetdicom_send(port: int, files: Sequence[Path], calling_aet: str = "MR_SCANNER") -> list[int]:
    """Send ``files`` with pynetdicom in one association; returns the C-STORE statuses (-1: no answer)."""
    import pydicom
    from pynetdicom import AE

    ae = AE(ae_title=calling_aet)
    headers = [pydicom.dcmread(path, stop_before_pixels=True) for path in files]
    for sop_class, syntax in sorted({(str(h.SOPClassUID), str(h.file_meta.TransferSyntaxUID)) for h in headers}):
        ae.add_requested_context(sop_class, syntax)
    assoc = ae.associate("127.0.0.1", port, ae_title=NODE_AET)
    assert assoc.is_established, f"no association with the node on port {port}"
    try:
        statuses = []
        for path in files:
            status = assoc.send_c_store(path)
            statuses.append(int(status.Status) if status and "Status" in status else -1)
    finally:
        assoc.release()
    return statuses
