"""Writing results so that nothing is ever half-written, and reading inputs with one-line errors.

Every file a script produces goes through `atomic_write`: the bytes land in a temporary file in the
same folder, are flushed to disk, and only then renamed over the destination (rename is atomic on
POSIX). A run killed midway leaves the previous file, or none, never a truncated one.
"""
from __future__ import annotations
import contextlib, errno, json, math, os, shutil, stat, sys, tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from common.cli import UserError


MIN_FREE_BYTES = 1 << 20     # a folder with less free space than this counts as full


def _why(e: OSError) -> str:
  return f"{e.strerror or type(e).__name__} (errno {e.errno})" if e.errno else (e.strerror or str(e) or type(e).__name__)


def _unwritable_reason(folder: Path, keep: bool = True) -> str | None:
  """Create `folder` if needed and prove a file can be made in it (a probe file is created and
  removed). None when it can; otherwise why not. keep=False removes again the folders it created,
  so that a check alone leaves nothing behind (the write creates them: atomic_path)."""
  if folder.exists() and not folder.is_dir(): return f"{folder} exists and is not a folder"
  created, f = [], folder
  while not f.exists() and f != f.parent: created, f = created + [f], f.parent      # deepest first
  try:
    folder.mkdir(parents=True, exist_ok=True)
    fd, probe = tempfile.mkstemp(prefix=".write-probe-", dir=folder)
    os.close(fd)
    os.unlink(probe)
    free = shutil.disk_usage(folder).free
  except OSError as e:
    return _why(e)
  finally:
    for d in created if not keep else []:
      with contextlib.suppress(OSError): d.rmdir()
  return f"the disk is full ({free} bytes free)" if free < MIN_FREE_BYTES else None


def writable_dir(path: str | os.PathLike, what: str = "output folder") -> Path:
  """Check now that files can be written in folder `path` (created if missing): read-only file
  systems, /proc, a file where the folder should be and a full disk fail here, as one UserError."""
  p = Path(path)
  if p.exists() and not p.is_dir(): raise UserError(f"{what} {p}: exists and is not a folder")
  if (why := _unwritable_reason(p)) is not None: raise UserError(f"{what} {p} cannot be written: {why}")
  return p


def writable_file(path: str | os.PathLike, what: str = "output file") -> Path:
  """Check now that `path` can be written atomically later: not a folder, not a device or pipe, an
  existing file writable, its folder writable or creatable (see `writable_dir`; a folder made for the
  check is removed again, so a run refused later leaves none behind)."""
  p = Path(path)
  if str(path).endswith(os.sep) or p.is_dir(): raise UserError(f"{what} {p}: is a folder, expected a file name")
  if p.exists() and not p.is_file(): raise UserError(f"{what} {p}: exists and is not a regular file")
  if p.exists() and not os.access(p, os.W_OK): raise UserError(f"{what} {p} cannot be written: permission denied")
  if (why := _unwritable_reason(p.parent if str(p.parent) else Path("."), keep=False)) is not None:
    raise UserError(f"{what} {p} cannot be written: {why}")
  return p


def out_dir(path: str | os.PathLike) -> Path:
  return writable_dir(path)


def _umask_mode() -> int:
  mask = os.umask(0)
  os.umask(mask)
  return 0o666 & ~mask


@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike) -> Iterator[Path]:
  """Yield a temporary path beside `dest`; on success it is fsynced and renamed onto `dest`.
  The new file gets the mode a plain open() would give (the umask's, or the replaced file's). Any
  OSError becomes one UserError naming `dest` and the errno; the earlier `dest` stays as it was."""
  dest = Path(dest)
  folder = dest.parent if str(dest.parent) else Path(".")
  tmp = None
  try:
    folder.mkdir(parents=True, exist_ok=True)
    mode = stat.S_IMODE(dest.stat().st_mode) if dest.is_file() else _umask_mode()
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp" + dest.suffix, dir=folder)
    os.close(fd)
    os.chmod(tmp, mode)
    yield Path(tmp)
    with open(tmp, "rb+") as f: os.fsync(f.fileno())
    os.replace(tmp, dest)
  except OSError as e:
    if e.errno == errno.ENOMEM: raise
    raise UserError(f"cannot write {dest}: {_why(e)}") from None
  finally:
    if tmp is not None and os.path.exists(tmp): os.unlink(tmp)


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


def save_checkpoint(state: dict, dest: str | os.PathLike, metadata: dict[str, Any] | None = None, *,
                    script: str | None = None, model: str | None = None) -> Path:
  """Write a state dict of tinygrad Tensors to `dest` (.safetensors) atomically. Metadata values
  are stored as strings (the safetensors format allows only strings there). `script` and `model`
  name who wrote it (e.g. "generative/generative_models.py", "ddpm"); `load_checkpoint` checks them.

  The file is assembled here from each tensor's host copy (8-byte little-endian header length, JSON
  header, raw bytes) rather than with tinygrad's safe_save: that one writes through a DISK tensor and
  compiles a small CPU kernel on the way, so saving on a GPU machine without clang failed after the
  whole training run. tinygrad's safe_load reads the result (tests check the round trip)."""
  provenance = {k: v for k, v in (("script", script), ("model", model)) if v is not None}
  meta = {k: v if isinstance(v, str) else json.dumps(_jsonable(v)) for k, v in {**(metadata or {}), **provenance}.items()}
  header: dict[str, Any] = {"__metadata__": meta} if meta else {}
  arrays, offset = [], 0
  for name, t in state.items():
    a = np.asarray(t.numpy() if hasattr(t, "numpy") else t)          # (not ascontiguousarray: it turns shape () into (1,))
    if a.dtype.name not in _SAFETENSORS_DTYPES: raise ValueError(f"save_checkpoint: {name} has dtype {a.dtype}, which this writer does not map")
    header[name] = {"dtype": _SAFETENSORS_DTYPES[a.dtype.name], "shape": list(a.shape), "data_offsets": [offset, offset + a.nbytes]}
    arrays.append(a)
    offset += a.nbytes
  blob = json.dumps(header, separators=(",", ":")).encode()
  blob += b" " * (-len(blob) % 8)                    # the tensor data starts 8-byte aligned
  with atomic_path(dest) as tmp:
    with open(tmp, "wb") as f:
      f.write(len(blob).to_bytes(8, "little"))
      f.write(blob)
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


def load_checkpoint(path: str | os.PathLike, *, script: str | None = None, model: str | tuple[str, ...] | None = None,
                    expected: dict | None = None, required_meta: tuple[str, ...] = ()) -> tuple[dict, dict[str, Any]]:
  """Read a checkpoint written by `save_checkpoint` -> (tensors on the default device, metadata).
  With `script`/`model`, a file another script or model wrote is refused in one line; `expected`
  (keys -> tensors or shapes) is checked by `check_state_matches`; `required_meta` names metadata
  fields that must be present."""
  from tinygrad import Tensor, Device
  from tinygrad.nn.state import safe_load
  p = Path(path)
  if p.is_dir(): raise UserError(f"checkpoint {p}: is a folder, expected a .safetensors file")
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
  if script is not None and meta.get("script") != script:
    raise UserError(f"checkpoint {p} was written by {meta.get('script') or 'an unknown script'}, not {script}")
  models = (model,) if isinstance(model, str) else model
  if models is not None and meta.get("model") not in models:
    raise UserError(f"checkpoint {p} holds model {meta.get('model')!r}, expected {' or '.join(map(repr, models))}")
  missing = [k for k in required_meta if k not in meta]
  if missing: raise UserError(f"checkpoint {p}: metadata lacks {missing[0]!r}")
  if expected is not None: check_state_matches(expected, tensors, f"checkpoint {p}")
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

MAX_IMAGE_PIXELS = 100_000_000     # 100 MP: larger headers are refused before decoding (10 000 x 10 000)


def _image_values(im) -> tuple[np.ndarray, float]:
  """A Pillow image -> (values as float32 with shape (H, W[, C]), full-scale value). Integer modes use
  their bit range; 'I' (32-bit, which Pillow also uses for 16-bit PNGs) is 16-bit unless a value says
  otherwise; 'F' (float) is taken as it is (full scale 1)."""
  if im.mode in ("I;16", "I;16B", "I;16L", "I;16N"):
    return np.asarray(im, dtype=np.uint16).astype(np.float32), 65535.0
  if im.mode == "I":
    a = np.asarray(im, dtype=np.int64)
    return a.astype(np.float32), 65535.0 if a.min(initial=0) >= 0 and a.max(initial=0) <= 65535 else float(max(abs(a.min()), a.max(), 1))
  if im.mode == "F": return np.asarray(im, dtype=np.float32), 1.0
  return np.asarray(im).astype(np.float32), 255.0


def read_image(path: str | os.PathLike, channels: int = 3, *, raw: bool = False, max_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray:
  """Any image Pillow reads -> float32 numpy array, (H, W, 3) for channels=3 or (H, W) for channels=1.

  Values are scaled to [0, 1] by the format's real range: 8-bit by 255, 16-bit (PNG 'I;16'/'I', as
  Middlebury and depth cameras write them) by 65535, float ('F') images as stored (clipped to [0, 1]).
  Modes: 1, L, P (palette), RGB, RGBA/LA/PA (transparent pixels composited on white, as a viewer
  shows them), CMYK and YCbCr (converted to RGB), I;16, I and F (greyscale; copied to 3 channels when
  channels=3). `raw=True` returns greyscale values unscaled (disparity and depth maps, where the
  number is the measurement). The header's size is checked before any pixel is decoded: an image over
  `max_pixels` (a decompression bomb, or just too large) is refused in one line naming its size."""
  from PIL import Image, UnidentifiedImageError
  if channels not in (1, 3): raise ValueError(f"read_image: channels must be 1 or 3, not {channels}")
  p = Path(path)
  if not p.is_file(): raise UserError(f"image {p}: no such file")
  try:
    with _no_pillow_size_limit(), Image.open(p) as im:
      w, h = im.size
      if w * h > max_pixels: raise UserError(f"image {p} is {w}x{h} px ({w * h / 1e6:.0f} MP), over the {max_pixels / 1e6:.0f} MP limit")
      if w == 0 or h == 0: raise UserError(f"image {p} is empty ({w}x{h} px)")
      im.load()
      arr, full = _image(im, channels, raw)
  except UserError: raise
  except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
    raise UserError(f"image {p} cannot be read as an image ({type(e).__name__}: {' '.join(str(e).split())[:100]})")
  if raw: return arr
  return np.clip(arr / full, 0.0, 1.0).astype(np.float32)


@contextlib.contextmanager
def _no_pillow_size_limit():
  """Pillow's own bomb check raises before the size can be named; ours (above) replaces it."""
  from PIL import Image
  saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
  try: yield
  finally: Image.MAX_IMAGE_PIXELS = saved


def _image(im, channels: int, raw: bool) -> tuple[np.ndarray, float]:
  from PIL import Image
  if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
    arr, full = _image_values(im)
    if raw or channels == 1: return arr, full
    return np.repeat(arr[..., None], 3, axis=2), full
  if raw and im.mode == "L": return _image_values(im)       # an 8-bit map (Middlebury 2003 stores 4·d as L)
  if raw: raise UserError(f"image {getattr(im, 'filename', '')} is {im.mode}, expected a one-channel map (L, I;16, I or F)")
  if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
    rgba = im.convert("RGBA")
    im = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
  return _image_values(im.convert("RGB" if channels == 3 else "L"))


def save_image(arr, dest: str | os.PathLike) -> Path:
  """uint8 or [0, 1] float array (H, W[, C]) -> image file (format from the suffix), atomically."""
  from PIL import Image
  a = np.asarray(arr)
  if a.dtype != np.uint8: a = (np.clip(a, 0, 1) * 255 + 0.5).astype(np.uint8)
  if a.ndim == 3 and a.shape[2] == 1: a = a[:, :, 0]
  fmt = Path(dest).suffix.lstrip(".").upper().replace("JPG", "JPEG") or "PNG"
  with atomic_path(dest) as tmp:
    Image.fromarray(a).save(tmp, format=fmt)
  return Path(dest)


# ---- audio ------------------------------------------------------------------------------------

MAX_AUDIO_FRAMES = 1 << 27          # ~47 min at 48 kHz: a larger header is refused before decoding


def read_audio(path: str | os.PathLike, *, max_frames: int = MAX_AUDIO_FRAMES) -> tuple[np.ndarray, int]:
  """Any file libsndfile reads (WAV, FLAC, OGG, AIFF, ...) -> (float32 mono samples, sample rate).
  Channels are averaged. Integer formats come in scaled to [-1, 1); float files as stored. The frame
  count is checked before decoding. NaN or infinite samples are refused; a peak far above full scale
  (a float file written unnormalized) is kept but warned about, since results then depend on it."""
  import soundfile as sf
  p = Path(path)
  if not p.is_file(): raise UserError(f"audio {p}: no such file")
  try:
    info = sf.info(str(p))
    if info.frames > max_frames: raise UserError(f"audio {p} has {info.frames} frames ({info.duration:.0f} s), over the {max_frames} frame limit")
    data, sr = sf.read(str(p), dtype="float32", always_2d=True)      # (frames, channels)
  except UserError: raise
  except Exception as e:
    raise UserError(f"audio {p} cannot be read ({' '.join(str(e).split())[:120] or type(e).__name__})")
  if data.shape[0] == 0: raise UserError(f"audio {p} is empty")
  mono = data.mean(axis=1)
  peak = float(np.abs(mono).max())
  if not math.isfinite(peak): raise UserError(f"audio {p} contains NaN or infinite samples")
  if peak > 1.01: print(f"warning: audio {p} peaks at {peak:.3g}, {20 * math.log10(peak):+.0f} dB above full scale", file=sys.stderr)
  return mono.astype(np.float32), int(sr)
