"""Bundle zips: written reproducibly, read back safely.

A LiteZoo bundle zip holds exactly one top folder, named after the bundle, so MONAI's ``monai.bundle download --url``
(which extracts with ``has_base=True``) and ``load_bundle_config("<name>.zip", ...)`` (which looks for
``<zip stem>/configs/...``) both accept it.

Writing (:func:`write_zip`): entries sorted by name, every timestamp set to :data:`ZIP_EPOCH`, fixed permissions,
one compression method and level, and no extra fields, so the same files always give the same bytes (and sha256).

Reading (:func:`extract_zip`): the archive's sha256 is compared with the expected one first (when given); every member
must stay inside the destination (no absolute paths, no ``..``, no drive letters or backslashes, no links, no
device files: "zip slip"); the files are extracted into a temporary folder beside the destination and moved into
place only when all of them are out, so a refused or broken archive leaves nothing behind.
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
import tempfile
import zipfile
import zlib
from collections.abc import Mapping
from pathlib import Path, PurePosixPath

from litezoo.runtime.records import sha256_file

__all__ = ["ZIP_EPOCH", "extract_zip", "write_zip"]

logger = logging.getLogger(__name__)

ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)  # the earliest time a zip entry can record
FILE_MODE = stat.S_IFREG | 0o644
FOLDER_MODE = stat.S_IFDIR | 0o755
UNIX = 3  # ZipInfo.create_system: permissions are in the high 16 bits of external_attr
CHUNK = 1 << 20


def _entry(name: str, mode: int) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=ZIP_EPOCH)
    info.create_system = UNIX
    info.external_attr = mode << 16
    if name.endswith("/"):
        info.external_attr |= 0x10  # MS-DOS directory flag
    info.compress_type = zipfile.ZIP_DEFLATED
    return info


def _check_member_name(name: str, archive: str) -> None:
    """Refuse a member name that could resolve outside the destination folder."""
    path = PurePosixPath(name)
    if not name or "\\" in name or name.startswith("/") or path.is_absolute() or ":" in path.parts[0]:
        raise ValueError(f"{archive}: member {name!r} is an absolute path or not a plain relative path; refused.")
    if any(part == ".." for part in path.parts):
        raise ValueError(f"{archive}: member {name!r} climbs out of its folder with '..' (zip slip); refused.")


def write_zip(files: Mapping[str, bytes], path: str | Path) -> str:
    """Write ``files`` (archive name -> bytes) as a reproducible zip, atomically.

    Folder entries are added for every parent folder; names, timestamps, permissions and compression are fixed, so
    equal inputs give byte-identical archives.

    Args:
        files: relative POSIX names (``"<top>/configs/inference.json"``) and their contents.
        path: the zip to write; its folder is created. It is written to a temporary file beside it and renamed, so
            an existing archive is replaced only by a complete one.

    Returns:
        The hex sha256 of the written archive.

    Raises:
        ValueError: a name is absolute, contains ``..`` or a backslash, or ends with ``/``.
    """
    path = Path(path)
    folders = set()
    for name in files:
        _check_member_name(name, path.name)
        if name.endswith("/"):
            raise ValueError(f"{path.name}: file name {name!r} ends with '/'.")
        folders.update(f"{parent.as_posix()}/" for parent in PurePosixPath(name).parents if parent.as_posix() != ".")
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    try:
        with zipfile.ZipFile(tmp, "w") as archive:
            for name in sorted(folders | set(files)):
                if name in folders:
                    archive.writestr(_entry(name, FOLDER_MODE), b"")
                else:
                    archive.writestr(_entry(name, FILE_MODE), files[name], compresslevel=9)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a published archive is readable
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return sha256_file(path)


def _top_folder(members: list[zipfile.ZipInfo], archive: str) -> str:
    """The single top folder every member lies in."""
    tops = {PurePosixPath(member.filename).parts[0] for member in members}
    if len(tops) != 1:
        raise ValueError(f"{archive}: a bundle zip holds exactly one top folder, found {sorted(tops) or 'none'}.")
    top = tops.pop()
    if not any(member.filename.startswith(f"{top}/") for member in members):
        raise ValueError(f"{archive}: its only entry {top!r} is not a folder.")
    return top


def extract_zip(archive: str | Path, dest: str | Path, sha256: str | None = None) -> Path:
    """Extract a bundle zip safely into ``dest`` and return the extracted top folder.

    Args:
        archive: the zip file.
        dest: the folder to extract into (created if missing); ``dest/<top folder>`` must not exist yet.
        sha256: the expected hex sha256 of ``archive``; checked before anything is read when given.

    Returns:
        ``dest/<top folder>``.

    Raises:
        ValueError: (naming the archive) it does not exist, its sha256 differs, it is not a zip, a member is
            absolute, climbs out with ``..``, is a link or a special file, there is not exactly one top folder, or
            the target folder already exists.
    """
    archive = Path(archive)
    name = str(archive)
    if not archive.is_file():
        raise ValueError(f"{name} does not exist or is not a file.")
    if sha256 is not None:
        expected = str(sha256).strip().lower()
        actual = sha256_file(archive)
        if actual != expected:
            raise ValueError(f"{name}: sha256 is {actual}, expected {expected}; the file is not the one published.")
    try:
        zipped = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as err:
        raise ValueError(f"{name} is not a readable zip archive: {err}") from err
    dest = Path(dest)
    with zipped:
        members = zipped.infolist()
        for member in members:
            _check_member_name(member.filename, name)
            kind = stat.S_IFMT(member.external_attr >> 16)
            if kind and kind not in (stat.S_IFREG, stat.S_IFDIR):
                what = "a symbolic link" if kind == stat.S_IFLNK else "not a regular file or folder"
                raise ValueError(f"{name}: member {member.filename!r} is {what}; refused.")
        top = _top_folder(members, name)
        target = dest / top
        if target.exists():
            raise ValueError(f"{name}: {target} already exists; remove it or extract elsewhere (--dest).")
        dest.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{top}.", dir=dest))
        try:
            root = staging.resolve()
            _extract_members(zipped, members, staging, root, name, dest)
            os.replace(staging / top, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    logger.info("extracted %s to %s", archive.name, target)
    return target


def _extract_members(
    zipped: zipfile.ZipFile, members: list[zipfile.ZipInfo], staging: Path, root: Path, name: str, dest: Path
) -> None:
    """Write every member under ``staging``; a damaged member (bad CRC, truncated data) raises ``ValueError``."""
    try:
        for member in members:
            out = (staging / member.filename).resolve()
            if out != root and root not in out.parents:
                raise ValueError(f"{name}: member {member.filename!r} resolves outside {dest}; refused.")
            if member.is_dir():
                out.mkdir(parents=True, exist_ok=True)
                continue
            out.parent.mkdir(parents=True, exist_ok=True)
            with zipped.open(member) as source, open(out, "wb") as sink:
                shutil.copyfileobj(source, sink, CHUNK)
    except (zipfile.BadZipFile, EOFError, zlib.error) as err:
        raise ValueError(f"{name}: member data is damaged: {err}") from err
