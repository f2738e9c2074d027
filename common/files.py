"""Writing results so that nothing is ever half-written, and reading inputs with one-line errors.

Every file a script produces goes through `atomic_write`: the bytes land in a temporary file in the
same folder, are flushed to disk, and only then renamed over the destination (rename is atomic on
POSIX). A run killed midway leaves the previous file, or none, never a truncated one.
"""
from __future__ import annotations
import contextlib, json, math, os, tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from common.cli import UserError


def out_dir(path: str | os.PathLike) -> Path:
  p = Path(path)
  try: p.mkdir(parents=True, exist_ok=True)
  except OSError as e: raise UserError(f"cannot create output folder {p}: {e.strerror}")
  return p


@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike) -> Iterator[Path]:
  """Yield a temporary path beside `dest`; on success it is fsynced and renamed onto `dest`."""
  dest = Path(dest)
  out_dir(dest.parent if str(dest.parent) else ".")
  fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp" + dest.suffix, dir=dest.parent)
  os.close(fd)
  try:
    yield Path(tmp)
    with open(tmp, "rb+") as f: os.fsync(f.fileno())
    os.replace(tmp, dest)
  finally:
    if os.path.exists(tmp): os.unlink(tmp)


@contextlib.contextmanager
def atomic_write(dest: str | os.PathLike, mode: str = "w") -> Iterator[Any]:
  with atomic_path(dest) as tmp, open(tmp, mode) as f:
    yield f


def _jsonable(x: Any) -> Any:
  if isinstance(x, float) and not math.isfinite(x): return None   # JSON has no NaN/inf
  if hasattr(x, "item") and callable(x.item): return _jsonable(x.item())   # numpy scalars
  if isinstance(x, dict): return {str(k): _jsonable(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)): return [_jsonable(v) for v in x]
  if isinstance(x, Path): return str(x)
  return x


def save_json(obj: Any, dest: str | os.PathLike) -> Path:
  with atomic_write(dest) as f:
    json.dump(_jsonable(obj), f, indent=2, allow_nan=False)
    f.write("\n")
  return Path(dest)


# ---- checkpoints (safetensors: written here, read with tinygrad's nn.state) -------------------

_SAFETENSORS_DTYPES = {"float64": "F64", "float32": "F32", "float16": "F16", "int64": "I64", "int32": "I32", "int16": "I16",
                       "int8": "I8", "uint8": "U8", "bool": "BOOL"}


def save_checkpoint(state: dict, dest: str | os.PathLike, metadata: dict[str, Any] | None = None) -> Path:
  """Write a state dict of tinygrad Tensors to `dest` (.safetensors) atomically. Metadata values
  are stored as strings (the safetensors format allows only strings there).

  The file is assembled here from each tensor's host copy (8-byte little-endian header length, JSON
  header, raw bytes) rather than with tinygrad's safe_save: that one writes through a DISK tensor and
  compiles a small CPU kernel on the way, so saving on a GPU machine without clang failed after the
  whole training run. tinygrad's safe_load reads the result (tests check the round trip)."""
  meta = {k: v if isinstance(v, str) else json.dumps(_jsonable(v)) for k, v in (metadata or {}).items()}
  header: dict[str, Any] = {"__metadata__": meta} if meta else {}
  arrays, offset = [], 0
  for name, t in state.items():
    a = np.asarray(t.numpy() if hasattr(t, "numpy") else t)          # (not ascontiguousarray: it turns shape () into (1,))
    if a.dtype.name not in _SAFETENSORS_DTYPES: raise ValueError(f"save_checkpoint: {name} has dtype {a.dtype}, which this writer does not map")
    header[name] = {"dtype": _SAFETENSORS_DTYPES[a.dtype.name], "shape": list(a.shape), "data_offsets": [offset, offset + a.nbytes]}
    arrays.append(a); offset += a.nbytes
  blob = json.dumps(header, separators=(",", ":")).encode()
  blob += b" " * (-len(blob) % 8)                    # the tensor data starts 8-byte aligned
  with atomic_path(dest) as tmp:
    with open(tmp, "wb") as f:
      f.write(len(blob).to_bytes(8, "little")); f.write(blob)
      for a in arrays: f.write(a.tobytes())
  return Path(dest)


def _safetensors_header(data: bytes) -> dict[str, Any]:
  """Parse and sanity-check a safetensors header: length prefix, JSON, and that every tensor's
  byte range lies inside the file (a truncated download or copy fails here, with a clear reason)."""
  if len(data) < 8: raise ValueError("shorter than the 8-byte header length")
  n = int.from_bytes(data[:8], "little")
  if 8 + n > len(data): raise ValueError("header runs past the end of the file (truncated?)")
  header = json.loads(data[8:8 + n])
  if not isinstance(header, dict): raise ValueError("header is not a JSON object")
  body = len(data) - 8 - n
  for k, v in header.items():
    if k == "__metadata__": continue
    if not isinstance(v, dict) or v.get("data_offsets", [0, body + 1])[1] > body: raise ValueError(f"tensor {k!r} lies outside the file (truncated?)")
  return header


def load_checkpoint(path: str | os.PathLike) -> tuple[dict, dict[str, Any]]:
  """Read a checkpoint written by `save_checkpoint` -> (tensors on the default device, metadata)."""
  from tinygrad import Tensor, Device
  from tinygrad.nn.state import safe_load
  p = Path(path)
  if not p.is_file(): raise UserError(f"checkpoint {p}: no such file")
  try:
    data = p.read_bytes()          # read into memory: no open file handle outlives the call
    header = _safetensors_header(data)
    tensors = {k: v.to(Device.DEFAULT).realize() for k, v in safe_load(Tensor(data)).items()}
  except Exception as e:
    raise UserError(f"checkpoint {p} is not a readable safetensors file ({' '.join(str(e).split())[:120] or type(e).__name__})")
  if not tensors: raise UserError(f"checkpoint {p} holds no tensors")
  meta: dict[str, Any] = {}
  for k, v in (header.get("__metadata__") or {}).items():
    try: meta[k] = json.loads(v)
    except (json.JSONDecodeError, TypeError): meta[k] = v
  return tensors, meta


def check_state_matches(expected: dict, loaded: dict, what: str) -> None:
  """Compare key sets and shapes; raise one line naming the first mismatch. `expected` maps keys to
  tensors/arrays or to plain shape tuples."""
  for k, v in expected.items():
    if k not in loaded: raise UserError(f"{what}: missing key {k!r}")
    want = tuple(v) if isinstance(v, tuple) else tuple(v.shape)
    if tuple(loaded[k].shape) != want:
      raise UserError(f"{what}: {k!r} has shape {tuple(loaded[k].shape)}, expected {want}")
  extra = sorted(set(loaded) - set(expected))
  if extra: raise UserError(f"{what}: unexpected key {extra[0]!r}" + (f" (and {len(extra) - 1} more)" if len(extra) > 1 else ""))


# ---- images -----------------------------------------------------------------------------------

def read_image(path: str | os.PathLike, mode: str = "RGB"):
  """Any image Pillow reads -> uint8 numpy array (H, W, C) or (H, W) for mode 'L'. Transparent
  pixels are composited on white so RGBA inputs look as they do in a viewer."""
  import numpy as np
  from PIL import Image, UnidentifiedImageError
  p = Path(path)
  if not p.is_file(): raise UserError(f"image {p}: no such file")
  try:
    with Image.open(p) as im:
      im.load()
      if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        im = Image.alpha_composite(bg, rgba)
      arr = np.asarray(im.convert(mode))
  except (UnidentifiedImageError, OSError, ValueError) as e:
    raise UserError(f"image {p} cannot be read as an image ({type(e).__name__})")
  if arr.size == 0: raise UserError(f"image {p} is empty")
  return arr


def save_image(arr, dest: str | os.PathLike) -> Path:
  """uint8 or [0, 1] float array (H, W[, C]) -> image file (format from the suffix), atomically."""
  import numpy as np
  from PIL import Image
  a = np.asarray(arr)
  if a.dtype != np.uint8: a = (np.clip(a, 0, 1) * 255 + 0.5).astype(np.uint8)
  if a.ndim == 3 and a.shape[2] == 1: a = a[:, :, 0]
  fmt = Path(dest).suffix.lstrip(".").upper().replace("JPG", "JPEG") or "PNG"
  with atomic_path(dest) as tmp:
    Image.fromarray(a).save(tmp, format=fmt)
  return Path(dest)
