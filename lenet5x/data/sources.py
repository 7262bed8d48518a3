"""Where MNIST-format datasets live: lookup order, public mirrors, checksummed atomic downloads.

Lookup order for a dataset's four files: --data-dir, then $LENET5X_DATA_DIR, then the per-user
cache ($XDG_CACHE_HOME/lenet5x or ~/.cache/lenet5x). In each directory D the files may be in D
itself or in D/<dataset>, raw or .gz. Where none holds them, they are downloaded into the first of
those directories that is set, each file checked against its MD5 and renamed into place only when
complete, so a partial download never looks like a dataset. A file already there is never
overwritten: only missing files are fetched.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path

from ..files import atomic_write
from .idx import DataError

FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


@dataclasses.dataclass(frozen=True)
class DatasetSource:
    name: str
    mirrors: tuple[str, ...]  # base URLs ending in '/', tried in order
    md5: dict[str, str]  # "<file>.gz" -> MD5 hex digest of the published .gz file
    classes: tuple[str, ...]
    # file stem -> SHA-256 of the uncompressed IDX file (a re-compressed copy, as Debian's
    # dataset-fashion-mnist ships, has other .gz bytes but the same content)
    sha256: dict[str, str] = dataclasses.field(default_factory=dict)


DATASETS = {
    "mnist": DatasetSource(
        "mnist",
        # the mirrors torchvision uses (the original host answers 403)
        (
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
        ),
        {
            "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
            "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
            "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
        },
        tuple(str(d) for d in range(10)),
        {
            "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
            "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
            "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
            "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        },
    ),
    "fashion-mnist": DatasetSource(
        "fashion-mnist",
        ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        {
            "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
            "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
            "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
        },
        (
            "T-shirt/top",
            "Trouser",
            "Pullover",
            "Dress",
            "Coat",
            "Sandal",
            "Shirt",
            "Sneaker",
            "Bag",
            "Ankle boot",
        ),
        {
            "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
            "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        },
    ),
}


def known_as(stem: str, sha256: str) -> str | None:
    """The known dataset whose file `stem` has this content (SHA-256), or None."""
    return next((n for n, source in DATASETS.items() if source.sha256.get(stem) == sha256), None)


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "lenet5x"


def candidate_dirs(data_dir=None) -> list[Path]:
    """Directories searched, in order: --data-dir, $LENET5X_DATA_DIR, the per-user cache."""
    dirs = []
    if data_dir:
        dirs.append(Path(data_dir).expanduser())
    if os.environ.get("LENET5X_DATA_DIR"):
        dirs.append(Path(os.environ["LENET5X_DATA_DIR"]).expanduser())
    dirs.append(cache_dir())
    return dirs


def _find_in(directory: Path, dataset: str) -> dict[str, Path] | None:
    for folder in (directory, directory / dataset):
        found = {}
        for stem in FILES:
            for candidate in (folder / f"{stem}.gz", folder / stem):
                if candidate.exists():
                    found[stem] = candidate
                    break
        if len(found) == len(FILES):
            return found
    return None


def md5_of(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class ChecksumMismatch(Exception):
    """A download's bytes do not have the published MD5."""


class Unreachable(Exception):
    """A URL that did not answer (the reason)."""


def download_file(urls, target: Path, md5: str, timeout: float = 30.0, log=print) -> None:
    """Fetch the first URL that answers with the right MD5 into `target`, atomically
    (files.atomic_write): a partial or wrong download never takes the target's name."""
    errors = []
    for url in urls:

        def fetch(out, url=url):
            digest = hashlib.md5(usedforsecurity=False)
            try:  # the URL's fault, not the target file's (atomic_write names that one)
                response = urllib.request.urlopen(url, timeout=timeout)
            except urllib.error.HTTPError as error:
                raise Unreachable(f"HTTP {error.code} {error.reason}") from None
            except (urllib.error.URLError, OSError, ValueError) as error:
                raise Unreachable(str(getattr(error, "reason", None) or error)) from None
            with response:
                while chunk := response.read(1 << 20):
                    out.write(chunk)
                    digest.update(chunk)
            if digest.hexdigest() != md5:
                raise ChecksumMismatch(
                    f"checksum mismatch (MD5 {digest.hexdigest()}, expected {md5})"
                )

        try:
            atomic_write(target, fetch, suffix=".part")
            log(f"downloaded {url} -> {target}")
            return
        except (Unreachable, ChecksumMismatch) as error:
            errors.append(f"{url}: {error}")
        except OSError as error:  # during the transfer, or writing the file
            errors.append(f"{url}: {error.strerror or error}")
    raise DataError(f"could not download {target.name}: " + "; ".join(errors))


def find_dataset(dataset: str, data_dir) -> tuple[dict[str, Path] | None, list[Path]]:
    """The four files from the first directory that holds them (candidate_dirs), or None, and
    the directories looked in; never downloads (locate_or_download does)."""
    if (
        data_dir
        and Path(data_dir).expanduser().exists()
        and not Path(data_dir).expanduser().is_dir()
    ):
        raise DataError(
            f"{data_dir}: not a directory; --data-dir (data.dir) names the folder that holds "
            f"the four {dataset} IDX files"
        )
    dirs = candidate_dirs(data_dir)
    for directory in dirs:
        found = _find_in(directory, dataset)
        if found:
            return found, dirs
    return None, dirs


def _missing_folders(folder: Path) -> list[Path]:
    """folder and those of its parents that do not exist yet, deepest first."""
    missing = []
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    return missing


def locate_or_download(dataset: str, data_dir=None, mirrors=None, log=None) -> dict[str, Path]:
    """Paths of the four files (by stem, see FILES), downloading them if no directory holds them.

    mirrors: override the dataset's base URLs (tests point this at a local server);
    $LENET5X_MIRROR (comma-separated) does the same from the environment. A download that fails
    leaves no folder behind that it created (a mistyped --data-dir stays absent).
    """
    log = log or (lambda message: print(message, file=sys.stderr))
    if dataset not in DATASETS:
        raise DataError(f"unknown dataset {dataset!r}: choose one of {', '.join(DATASETS)}")
    found, dirs = find_dataset(dataset, data_dir)
    if found:
        return found
    if mirrors is None and os.environ.get("LENET5X_MIRROR"):
        mirrors = [m.strip() for m in os.environ["LENET5X_MIRROR"].split(",") if m.strip()]
    source = DATASETS[dataset]
    mirrors = [m if m.endswith("/") else m + "/" for m in (mirrors or source.mirrors)]
    target_dir = dirs[0] / dataset if not data_dir else dirs[0]
    log(f"{dataset} not found in {', '.join(str(d) for d in dirs)}; downloading into {target_dir}")
    created, paths = _missing_folders(target_dir), {}
    try:
        target_dir.mkdir(parents=True, exist_ok=True)
        for stem in FILES:
            name = f"{stem}.gz"
            present = [p for p in (target_dir / name, target_dir / stem) if p.exists()]
            if present:  # never overwritten: a bad file is reported when read, with what to do
                paths[stem] = present[0]
                continue
            download_file([m + name for m in mirrors], target_dir / name, source.md5[name], log=log)
            paths[stem] = target_dir / name
    except DataError as error:
        _remove_if_empty(created)
        raise DataError(
            f"{error}. If this machine is offline, copy the four {dataset} .gz files into a "
            "directory and pass --data-dir DIR (or set LENET5X_DATA_DIR)"
        ) from None
    except OSError as error:  # cannot create or write the target directory (permissions, full disk)
        _remove_if_empty(created)
        raise DataError(
            f"cannot write into {target_dir} ({error.strerror or error}); pass --data-dir to a "
            f"writable directory, or one that holds the four {dataset} files"
        ) from None
    return paths


def _remove_if_empty(folders: list[Path]) -> None:
    for folder in folders:  # deepest first
        try:
            folder.rmdir()
        except OSError:
            return
