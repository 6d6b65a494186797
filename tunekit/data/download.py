"""Download the study's datasets once per machine: fixed URLs, size + MD5 check, safe extract.

``ensure(REMOTES["pets"], data_root())`` returns the extracted folder, downloading it first
if needed: to a ``.part`` file with a progress bar, checked against the known size and MD5
(fastai's published values for the same archives), extracted with every member checked to
stay inside the target (no absolute paths, no ``..``, no links out), all under a file lock
so that concurrent trials on a node download once. Offline, the error says where to put
the files by hand.
"""

from __future__ import annotations

import hashlib
import os
import sys
import tarfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from filelock import FileLock

from ..errors import TunekitError
from ..paths import data_root  # noqa: F401 - the data package's data_root


@dataclass(frozen=True)
class Remote:
    name: str
    url: str
    size: int | None
    md5: str | None
    folder: str  # top-level folder inside the archive
    layout: str  # what the user would put there by hand
    images: int | None = None  # how many images it holds (for a cost estimate before the download)
    valid_images: int | None = None  # of them in its own validation split (None: the spec's valid_pct makes one)


REMOTES = {
    "pets": Remote(
        "pets", "https://s3.amazonaws.com/fast-ai-imageclas/oxford-iiit-pet.tgz",
        811_706_944, "e4db5c768afd933bb91f5f594d7417a4", "oxford-iiit-pet",
        "oxford-iiit-pet/images/<Breed_Name>_<n>.jpg", 7390,
    ),
    "planet": Remote(
        "planet", "https://s3.amazonaws.com/fast-ai-sample/planet_sample.tgz",
        15_523_994, "8bfb174b3162f07fbde09b54555bdb00", "planet_sample",
        "planet_sample/labels.csv and planet_sample/train/<image_name>.jpg", 1000,
    ),
    "imagenette": Remote(
        "imagenette", "https://s3.amazonaws.com/fast-ai-imageclas/imagenette2-160.tgz",
        99_003_388, "c475f8f7617a200ba35b9facc48443c3", "imagenette2-160",
        "imagenette2-160/train/<wnid>/*.JPEG and imagenette2-160/val/<wnid>/*.JPEG", 13394, 3925,
    ),
}


def ensure(remote: Remote, root: Path, progress: bool = True) -> Path:
    """The extracted dataset folder under ``root``, downloading and extracting it if needed."""
    target = root / remote.folder
    done = root / f".{remote.name}.done"
    if done.is_file() and target.is_dir():
        return target
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root / f".{remote.name}.lock")):
        if done.is_file() and target.is_dir():
            return target
        archive = root / Path(remote.url).name
        if not _verified(archive, remote):
            fetch(remote, archive, progress)
        safe_extract(archive, root)
        if not target.is_dir():
            raise TunekitError(f"{archive} did not contain the expected folder {remote.folder!r}")
        done.write_text(remote.url + "\n")
        archive.unlink()
    return target


def _verified(archive: Path, remote: Remote) -> bool:
    if not archive.is_file():
        return False
    if remote.size is not None and archive.stat().st_size != remote.size:
        return False
    return remote.md5 is None or _md5(archive) == remote.md5


def _md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fetch(remote: Remote, archive: Path, progress: bool, by_hand: str | None = None) -> None:
    """Download ``remote`` to ``archive`` (through a .part file), checking its size and MD5 where known;
    the error says how to do it by hand (``by_hand``, else: extract the archive there)."""
    part = archive.with_name(archive.name + ".part")
    by_hand = by_hand or (
        f"Download {remote.url} yourself and extract it into {archive.parent} "
        f"(giving {archive.parent}/{remote.layout}), or point the spec at your copy: "
        f"'{remote.name}:PATH'."
    )
    try:
        with urllib.request.urlopen(remote.url, timeout=30) as response, open(part, "wb") as out:
            total = int(response.headers.get("Content-Length") or remote.size or 0) or None
            bar = _progress(total, f"downloading {remote.name}", progress)
            while chunk := response.read(1 << 20):
                out.write(chunk)
                bar.update(len(chunk))
            bar.close()
    except (urllib.error.URLError, OSError, TimeoutError) as e:
        part.unlink(missing_ok=True)
        reason = getattr(e, "reason", e)
        raise TunekitError(
            f"could not download the {remote.name} dataset from {remote.url}: {reason}. {by_hand}"
        ) from None
    got = part.stat().st_size
    if remote.size is not None and got != remote.size:
        part.unlink()
        raise TunekitError(f"download of {remote.url} is {got} bytes, expected {remote.size}. {by_hand}")
    if remote.md5 is not None and (digest := _md5(part)) != remote.md5:
        part.unlink()
        raise TunekitError(f"download of {remote.url} has MD5 {digest}, expected {remote.md5}. {by_hand}")
    os.replace(part, archive)


def _progress(total: int | None, desc: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="B", unit_scale=True, disable=not enabled, file=sys.stderr)


def safe_extract(archive: Path, dest: Path) -> None:
    """Extract a tar archive into ``dest``, refusing any member that would land outside it."""
    dest = dest.resolve()
    try:
        tar = tarfile.open(archive)
    except tarfile.TarError as e:
        raise TunekitError(f"{archive} is not a readable tar archive: {e}") from None
    with tar:
        for m in tar.getmembers():
            bad = _unsafe(m, dest)
            if bad:
                raise TunekitError(f"refusing to extract {archive}: member {m.name!r} {bad}")
        if hasattr(tarfile, "data_filter"):  # Python >= 3.10.12 / 3.11.4: a second line of defence
            tar.extractall(dest, filter="data")
        else:
            tar.extractall(dest)  # noqa: S202 - every member was checked above


def _unsafe(m: tarfile.TarInfo, dest: Path) -> str | None:
    name = PurePosixPath(m.name)
    if name.is_absolute() or m.name.startswith(("/", "\\")) or (len(m.name) > 1 and m.name[1] == ":"):
        return "has an absolute path"
    if ".." in name.parts:
        return "points outside the target folder ('..')"
    if not (dest / m.name).resolve().is_relative_to(dest):
        return "points outside the target folder"
    if m.issym() or m.islnk():
        link = PurePosixPath(m.linkname)
        base = (dest / m.name).parent if m.issym() else dest
        if link.is_absolute() or not (base / m.linkname).resolve().is_relative_to(dest):
            return f"links outside the target folder ({m.linkname!r})"
    if not (m.isfile() or m.isdir() or m.issym() or m.islnk()):
        return "is a device or other special file"
    return None

