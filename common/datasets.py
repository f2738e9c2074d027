"""Reading labelled data from local folders, once for every project (images and audio alike).

Two layouts are common, and both are read here with one-line errors:
  - class sub-folders:  root/<label>/<file>   (the label is the sub-folder's name)
  - MNIST's idx files:  train-images-idx3-ubyte[.gz] + train-labels-idx1-ubyte[.gz], optionally the
                        t10k- pair as the held-out set

`scan_labelled` finds the files, `holdout_split` picks a stratified held-out set, `read_idx` and
`load_idx_pairs` read MNIST's format. Decoding a single file is `common.files.read_image` /
`read_audio`; the project decides what to do with the arrays.
"""
from __future__ import annotations
import gzip, struct
from pathlib import Path

import numpy as np

from common.cli import UserError

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"})
AUDIO_SUFFIXES = frozenset({".wav", ".flac", ".ogg", ".aiff", ".aif", ".au"})


def scan_labelled(root: str | Path, suffixes: frozenset[str], what: str = "--data") -> tuple[list[Path], list[str] | None]:
  """Files under `root` with one of `suffixes` -> (files, labels). With class sub-folders (one level,
  hidden ones skipped) the label is the sub-folder's name; files directly in `root` (and no sub-folders)
  give labels None. Sorted, so a run is reproducible."""
  root = Path(root)
  if not root.exists(): raise UserError(f"{what} {root}: no such folder")
  if not root.is_dir(): raise UserError(f"{what} {root}: not a folder")
  def files_in(d: Path) -> list[Path]: return sorted(p for p in d.rglob("*") if p.suffix.lower() in suffixes and p.is_file())
  subdirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
  groups = [(d.name, files_in(d)) for d in subdirs]
  groups = [(name, fs) for name, fs in groups if fs]
  if groups:
    return [f for _, fs in groups for f in fs], [name for name, fs in groups for _ in fs]
  files = sorted(p for p in root.iterdir() if p.suffix.lower() in suffixes and p.is_file())
  if not files: raise UserError(f"{what} {root}: no files of type {', '.join(sorted(suffixes))} (also looked in sub-folders)")
  return files, None


def holdout_split(labels: np.ndarray | None, n: int, fraction: float, rng: np.random.Generator) -> np.ndarray:
  """Boolean mask of the held-out items: `fraction` of each class (at least one each), or of all items
  when unlabelled. A class with a single item cannot be split and is a one-line error."""
  test = np.zeros(n, bool)
  if labels is None:
    if n < 2: raise UserError(f"need at least 2 items to hold one out, found {n}")
    test[rng.permutation(n)[:max(1, round(fraction * n))]] = True
    return test
  labels = np.asarray(labels)
  for lab in np.unique(labels):
    idx = rng.permutation(np.flatnonzero(labels == lab))
    if len(idx) < 2: raise UserError(f"class {str(lab)!r} has only one item: cannot hold one out for testing")
    test[idx[:max(1, round(fraction * len(idx)))]] = True
  return test


def read_idx(path: Path) -> np.ndarray:
  """MNIST's idx format: 2 zero bytes, a type byte (0x08 = uint8), the number of dimensions, one
  big-endian uint32 per dimension, then the data. Images are idx3 (N, 28, 28), labels idx1 (N,)."""
  try:
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b": raw = gzip.decompress(raw)
  except (OSError, EOFError, gzip.BadGzipFile) as e:
    raise UserError(f"{path}: cannot read ({type(e).__name__}: {e})")
  if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08 or raw[3] not in (1, 3):
    raise UserError(f"{path}: not an MNIST idx file (magic {raw[:4].hex() or 'missing'}, expected 00000801 or 00000803)")
  ndim = raw[3]
  if len(raw) < 4 + 4 * ndim: raise UserError(f"{path}: idx header is truncated")
  dims = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
  count = int(np.prod(dims))
  if len(raw) != 4 + 4 * ndim + count:
    raise UserError(f"{path}: header says {'x'.join(map(str, dims))} values but the file holds {len(raw) - 4 - 4 * ndim}")
  return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def _idx_pair(images_file: Path) -> tuple[np.ndarray, np.ndarray]:
  x = read_idx(images_file)
  labels_file = images_file.with_name(images_file.name.replace("images-idx3", "labels-idx1").replace("images.idx3", "labels.idx1"))
  if labels_file == images_file or not labels_file.exists():
    raise UserError(f"{images_file}: no labels file beside it (expected {labels_file.name})")
  y = read_idx(labels_file)
  if x.ndim != 3 or y.ndim != 1: raise UserError(f"{images_file}: expected idx3 images and idx1 labels, got {x.ndim}-d and {y.ndim}-d")
  if len(x) != len(y): raise UserError(f"{images_file}: {len(x)} images but {labels_file.name} has {len(y)} labels")
  if len(x) == 0: raise UserError(f"{images_file}: no images")
  return x, y.astype(np.int64)


def is_idx(path: Path) -> bool:
  """Does `path` (a file, or a folder's file names) look like MNIST's idx format?"""
  return path.is_file() or (path.is_dir() and any("idx3" in p.name for p in path.iterdir()))


def load_idx_pairs(path: Path) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray] | None]:
  """A folder with a train-images/train-labels pair (and optionally the t10k- pair), or one images
  file whose labels file sits beside it -> ((x_train uint8 (N, H, W), y_train), (x_test, y_test) or None)."""
  if path.is_file(): return _idx_pair(path), None
  def find(prefix: str) -> Path | None: return next((p for p in sorted(path.iterdir()) if p.name.startswith(prefix) and "idx3" in p.name), None)
  train_file, test_file = find("train-images"), find("t10k-images")
  if train_file is None:
    raise UserError(f"{path}: no train-images-idx3-ubyte[.gz] file (found {test_file.name if test_file else 'no idx images'}); "
                    "give the t10k images file itself to train on it")
  return _idx_pair(train_file), (_idx_pair(test_file) if test_file else None)
