"""The pets/planet download path against a real HTTP server on 127.0.0.1 (no internet)."""

from __future__ import annotations

import hashlib
import io
import socket
import tarfile
import threading
from pathlib import Path

import pytest

from tunekit import data as tkdata
from tunekit.data import download
from tunekit.data.download import Remote, ensure, safe_extract
from tunekit.data.shapes import write_shapes
from tunekit.errors import TunekitError


def planet_archive(tmp_path: Path, www: Path) -> tuple[int, str]:
    """A small archive in the Planet sample's layout: planet_sample/{labels.csv,train/*.jpg}."""
    src = write_shapes(tmp_path / "src" / "planet_sample", n=60, size=24, multilabel=True)
    return _archive(src, "planet_sample", www / "planet_sample.tgz")


def pets_archive(tmp_path: Path, www: Path) -> tuple[int, str]:
    """The fastai Pets archive's layout: oxford-iiit-pet/images/<Breed_Name>_<n>.jpg (flat)."""
    src = write_shapes(tmp_path / "src" / "shapes", n=60, size=24)
    images = tmp_path / "src" / "oxford-iiit-pet" / "images"
    images.mkdir(parents=True)
    for f in src.glob("*/*.jpg"):
        f.rename(images / f.name)
    return _archive(images.parent, "oxford-iiit-pet", www / "oxford-iiit-pet.tgz")


def _archive(src: Path, arcname: str, archive: Path) -> tuple[int, str]:
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(src, arcname=arcname)
    data = archive.read_bytes()
    return len(data), hashlib.md5(data).hexdigest()


@pytest.mark.parametrize(("name", "make", "folder", "multilabel"), [
    ("planet", planet_archive, "planet_sample", True), ("pets", pets_archive, "oxford-iiit-pet", False)])
def test_dataset_downloads_once_through_the_spec(tmp_path, server, monkeypatch, name, make, folder, multilabel):
    base, www, requests = server
    size, md5 = make(tmp_path, www)
    monkeypatch.setenv("TUNEKIT_DATA", str(tmp_path / "root"))
    real = download.REMOTES[name]
    monkeypatch.setitem(download.REMOTES, name, Remote(
        name, f"{base}/{Path(real.url).name}", size, md5, real.folder, real.layout))
    ds = tkdata.load(name, "squish", 24)
    assert ds.multilabel == multilabel and len(ds.train_index) + len(ds.valid_index) == 60
    assert len(ds.classes) == 6
    assert (tmp_path / "root" / folder).is_dir()
    assert not (tmp_path / "root" / Path(real.url).name).exists()  # archive removed after extraction
    tkdata.load(name, "squish", 24)
    assert requests == [f"/{Path(real.url).name}"]


def test_concurrent_callers_download_once(tmp_path, server):
    base, www, requests = server
    size, md5 = planet_archive(tmp_path, www)
    remote = Remote("planet", f"{base}/planet_sample.tgz", size, md5, "planet_sample", "")
    results: list[Path] = []
    threads = [threading.Thread(target=lambda: results.append(ensure(remote, tmp_path / "root", progress=False)))
               for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 3 and len(set(results)) == 1
    assert requests == ["/planet_sample.tgz"]


def test_wrong_checksum_is_rejected(tmp_path, server):
    base, www, _ = server
    size, _ = planet_archive(tmp_path, www)
    remote = Remote("planet", f"{base}/planet_sample.tgz", size, "0" * 32, "planet_sample", "x")
    with pytest.raises(TunekitError, match="has MD5 .* expected 0000"):
        ensure(remote, tmp_path / "root", progress=False)
    assert not list((tmp_path / "root").glob("*.part")) and not (tmp_path / "root" / "planet_sample").exists()


def test_wrong_size_is_rejected(tmp_path, server):
    base, www, _ = server
    size, md5 = planet_archive(tmp_path, www)
    remote = Remote("planet", f"{base}/planet_sample.tgz", size + 1, md5, "planet_sample", "x")
    with pytest.raises(TunekitError, match=f"is {size} bytes, expected {size + 1}"):
        ensure(remote, tmp_path / "root", progress=False)


def test_offline_says_where_to_put_the_files(tmp_path):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    remote = Remote("pets", f"http://127.0.0.1:{port}/oxford-iiit-pet.tgz", 10, None, "oxford-iiit-pet",
                    "oxford-iiit-pet/images/<Breed_Name>_<n>.jpg")
    with pytest.raises(TunekitError) as err:
        ensure(remote, tmp_path / "root", progress=False)
    msg = str(err.value)
    assert "could not download the pets dataset" in msg
    assert f"extract it into {tmp_path / 'root'}" in msg and "'pets:PATH'" in msg


def test_fixed_urls_are_https_with_checks():
    for remote in download.REMOTES.values():
        assert remote.url.startswith("https://") and remote.size and remote.md5


def _tar_with(members: list[tuple[tarfile.TarInfo, bytes | None]], path: Path) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for info, payload in members:
            tar.addfile(info, io.BytesIO(payload) if payload is not None else None)
    return path


@pytest.mark.parametrize(
    ("name", "kind", "link"),
    [("../evil.txt", tarfile.REGTYPE, ""), ("/tmp/abs-evil.txt", tarfile.REGTYPE, ""),
     ("ok/../../evil.txt", tarfile.REGTYPE, ""), ("ok/link", tarfile.SYMTYPE, "/etc/passwd"),
     ("ok/link2", tarfile.SYMTYPE, "../../outside")],
)
def test_extraction_refuses_path_traversal(tmp_path, name, kind, link):
    good = tarfile.TarInfo("ok/fine.txt")
    good.size = 2
    bad = tarfile.TarInfo(name)
    bad.type, bad.linkname = kind, link
    payload = b"x" if kind == tarfile.REGTYPE else None
    bad.size = 1 if payload else 0
    archive = _tar_with([(good, b"ok"), (bad, payload)], tmp_path / "evil.tgz")
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(TunekitError, match="refusing to extract"):
        safe_extract(archive, dest)
    assert not any(dest.iterdir())  # nothing extracted at all
    assert not (tmp_path / "evil.txt").exists()
