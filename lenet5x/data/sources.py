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
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

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
    md5: dict[str, str]  # "<file>.gz" -> MD5 hex digest
    classes: tuple[str, ...]


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
    ),
}


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


def download_file(urls, target: Path, md5: str, timeout: float = 30.0, log=print) -> None:
    """Fetch the first URL that answers with the right MD5 into `target`, atomically.

    The bytes go to a temporary file in the same directory, which is renamed onto `target` only
    after the checksum matches; on any failure the temporary file is removed.
    """
    errors = []
    target.parent.mkdir(parents=True, exist_ok=True)
    for url in urls:
        fd, tmp_name = tempfile.mkstemp(
            prefix=f".{target.name}.", suffix=".part", dir=target.parent
        )
        tmp = Path(tmp_name)
        try:
            with (
                os.fdopen(fd, "wb") as out,
                urllib.request.urlopen(url, timeout=timeout) as response,
            ):
                while chunk := response.read(1 << 20):
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            got = md5_of(tmp)
            if got != md5:
                errors.append(f"{url}: checksum mismatch (MD5 {got}, expected {md5})")
                continue
            os.replace(tmp, target)
            log(f"downloaded {url} -> {target}")
            return
        except urllib.error.HTTPError as error:
            errors.append(f"{url}: HTTP {error.code} {error.reason}")
        except (urllib.error.URLError, OSError, ValueError) as error:
            reason = getattr(error, "reason", None) or error
            errors.append(f"{url}: {reason}")
        finally:
            if tmp.exists():
                tmp.unlink()
    raise DataError(f"could not download {target.name}: " + "; ".join(errors))


def locate_or_download(dataset: str, data_dir=None, mirrors=None, log=None) -> dict[str, Path]:
    """Paths of the four files (by stem, see FILES), downloading them if no directory holds them.

    mirrors: override the dataset's base URLs (tests point this at a local server);
    $LENET5X_MIRROR (comma-separated) does the same from the environment.
    """
    if log is None:

        def log(message):
            print(message, file=sys.stderr)

    if dataset not in DATASETS:
        raise DataError(f"unknown dataset {dataset!r}: choose one of {', '.join(DATASETS)}")
    source = DATASETS[dataset]
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
            return found
    if mirrors is None and os.environ.get("LENET5X_MIRROR"):
        mirrors = [m.strip() for m in os.environ["LENET5X_MIRROR"].split(",") if m.strip()]
    mirrors = [m if m.endswith("/") else m + "/" for m in (mirrors or source.mirrors)]
    target_dir = dirs[0] / dataset if not data_dir else dirs[0]
    log(f"{dataset} not found in {', '.join(str(d) for d in dirs)}; downloading into {target_dir}")
    paths = {}
    try:
        for stem in FILES:
            name = f"{stem}.gz"
            present = [p for p in (target_dir / name, target_dir / stem) if p.exists()]
            if present:  # never overwritten: a bad file is reported when read, with what to do
                paths[stem] = present[0]
                continue
            download_file([m + name for m in mirrors], target_dir / name, source.md5[name], log=log)
            paths[stem] = target_dir / name
    except DataError as error:
        raise DataError(
            f"{error}. If this machine is offline, copy the four {dataset} .gz files into a directory "
            f"and pass --data-dir DIR (or set LENET5X_DATA_DIR)"
        ) from None
    except (
        OSError
    ) as error:  # cannot create or write the target directory (permissions, full disk, ...)
        raise DataError(
            f"cannot write into {target_dir} ({error.strerror or error}); pass --data-dir to a "
            f"writable directory, or one that holds the four {dataset} files"
        ) from None
    return paths
