"""Command-line plumbing every script shares: the standard flags, one-line errors, PASS/FAIL checks.

Bad input never ends in a traceback. A script raises `UserError("what is wrong")` (or calls
`fail(...)`), and `run_main` prints `error: what is wrong` on one line and exits with status 2.
argparse's own errors (unknown flag, a value of the wrong type) are one line and status 2 as well.
A success check that fails (`check(...)` returning False) is not bad input: scripts exit 1 then.

The rules, once for every script:
  - Outputs are checked before any work: `--json` and `--save` when the flags are parsed,
    `--out` by `check_out_dir(args)` in the modes that write there (common.files says what "can be
    written" means). A write that still fails later is one line naming the file and the errno.
  - Number flags are finite (`finite_float` and friends refuse nan and inf).
  - `--quick` / `--full` change defaults only (`ArgumentParser.preset`): a flag the user typed wins.
  - `run_main` opens the device as soon as the flags parse (so `--help` and argparse's refusals, an
    unknown flag or a value of the wrong type or range, start no device) and turns UserError,
    out-of-memory, Ctrl-C and SIGTERM into one line each.
"""
from __future__ import annotations
import argparse, errno, math, os, signal, sys
from typing import Any, Callable, NoReturn, Sequence


class UserError(Exception):
  """Bad input or an impossible request; the message is shown alone on one line."""


def fail(msg: str) -> NoReturn:
  raise UserError(msg)


class ArgumentParser(argparse.ArgumentParser):
  """argparse with a one-line error (no usage block), defaults shown in --help, and presets.

  A preset (`--quick`, `--full`) changes defaults only: `p.preset("quick", steps=50)` sets `steps` to
  50 when `--quick` is given, unless the user typed `--steps` too. After parsing, `args.given` is the
  set of destinations the user typed (so a script can tell "the default" from "asked for")."""
  def __init__(self, *args, **kwargs):
    kwargs.setdefault("formatter_class", argparse.ArgumentDefaultsHelpFormatter)
    super().__init__(*args, **kwargs)
    self.presets: dict[str, dict[str, Any]] = {}
    self.project: str | None = None      # set by project_parser: BEAM's budget and cache tags use it

  def error(self, message: str) -> NoReturn:
    print(f"{self.prog}: error: {message} (see --help)", file=sys.stderr)
    raise SystemExit(2)

  def preset(self, flag_dest: str, **defaults: Any) -> None:
    """Defaults that apply when the store_true flag `flag_dest` is set; flags the user typed win."""
    self.presets.setdefault(flag_dest, {}).update(defaults)

  def given(self, argv: Sequence[str] | None) -> set[str]:
    """Destinations that appear on the command line: parse once more with every default suppressed."""
    saved = [(a, a.default) for a in self._actions]
    saved_defaults, self._defaults = self._defaults, {}
    try:
      for a in self._actions: a.default = argparse.SUPPRESS
      ns, _ = super().parse_known_args(argv, None)
    finally:
      for a, d in saved: a.default = d
      self._defaults = saved_defaults
    return set(vars(ns))

  def parse_args(self, args: Sequence[str] | None = None, namespace: Any = None) -> argparse.Namespace:  # type: ignore[override]
    ns = super().parse_args(args, namespace)
    ns.given = self.given(args)
    for flag, defaults in self.presets.items():
      if getattr(ns, flag, False):
        for dest, value in defaults.items():
          if dest not in ns.given: setattr(ns, dest, value)
    try:
      for dest in ("json", "save", "out", "load"):
        if dest in ns.given and getattr(ns, dest, None) == "": raise UserError(f"--{dest} needs a path, got an empty string")
      for dest in ("json", "save"):
        if getattr(ns, dest, None): check_writable(getattr(ns, dest), f"--{dest}")
    except UserError as e: self.error(str(e))
    if self.project is not None:
      from common import beam
      if beam.beam_level() > 0 or getattr(ns, "beam_minutes", None) is not None: beam.install(self.project, getattr(ns, "beam_minutes", None))
    _open_device_when_wanted()
    return ns


_device_wanted = False   # set by run_main: the first parse that succeeds opens the default device
_flags_parsed = False    # a parse succeeded in this process (a script that parses before calling run_main)


def _open_device_when_wanted() -> None:
  """Open the default device once, after the flags parsed: tinygrad's device start costs 0.3-0.8 s on a CPU (it probes
  every backend when DEV is unset, and builds the CPU device's queue programs), which --help and argparse's refusals
  skip."""
  global _device_wanted, _flags_parsed
  _flags_parsed = True
  if not _device_wanted: return
  _device_wanted = False
  from common.device import open_device
  open_device()


def first_paragraph(doc: str | None) -> str:
  return (doc or "").strip().split("\n\n")[0].replace("\n", " ")


def project_parser(project: str, doc: str | None, *, quick_help: str = "tiny setting for tests (seconds)",
                   full_help: str | None = None, save_help: str | None = "the trained model (.safetensors)",
                   load_help: str = "a model written by --save, used instead of training") -> ArgumentParser:
  """The flags every project script has. `project` names the default output folder out/<project>/.
  `save_help` says what --save writes for this project; None leaves --save/--load out (a project that
  trains nothing names its own output flag for what it writes). `full_help` adds --full."""
  p = ArgumentParser(description=first_paragraph(doc),
                     epilog="The module docstring is the tutorial: python3 -c 'help(\"<script>\")' or read the file.")
  p.project = project
  g = p.add_argument_group("common flags")
  g.add_argument("--bench", action="store_true", help="time the hot paths and print a table instead of the demo")
  g.add_argument("--json", metavar="PATH", default=None, help="write the timing records (common.bench schema) of whatever ran here")
  g.add_argument("--out", metavar="DIR", default=os.path.join("out", project), help="folder for images, plots, checkpoints and the summary")
  g.add_argument("--seed", type=seed_int, default=0, help="random seed (numpy and tinygrad), 0 to 2**32 - 1")
  g.add_argument("--beam-minutes", metavar="M", type=positive_float, default=None,
                 help="with BEAM=N or JITBEAM=N: stop searching after M minutes; unsearched kernels keep the heuristic's choice (common/beam.py)")
  g.add_argument("--quick", action="store_true", help=quick_help + "; changes defaults only, flags you give win")
  if full_help: g.add_argument("--full", action="store_true", help=full_help + "; changes defaults only, flags you give win")
  if save_help is not None:
    g.add_argument("--save", metavar="PATH", default=None, help=f"write {save_help} here, atomically")
    g.add_argument("--load", metavar="PATH", default=None, help=load_help)
  return p


def check_writable(path: str | os.PathLike, what: str) -> None:
  """Raise a one-line UserError now if `path` cannot be written later (see common.files.writable_file)."""
  from common.files import writable_file
  writable_file(path, what)


def check_out_dir(args: argparse.Namespace) -> None:
  """Make sure --out can be written before any work (call it in the modes that write there)."""
  from common.files import writable_dir
  writable_dir(args.out, "--out")


# ---- argparse value types: a wrong value is a one-line argparse error -------------------------

def positive_int(text: str) -> int:
  try: v = int(text)
  except ValueError: raise argparse.ArgumentTypeError(f"{text!r} is not an integer")
  if v <= 0: raise argparse.ArgumentTypeError(f"{v} must be > 0")
  return v


def seed_int(text: str) -> int:
  """A random seed numpy accepts (0 to 2**32 - 1): a negative or larger one was a traceback in np.random.seed."""
  v = nonnegative_int(text)
  if v >= 2 ** 32: raise argparse.ArgumentTypeError(f"{v} must be below 2**32")
  return v


def nonnegative_int(text: str) -> int:
  try: v = int(text)
  except ValueError: raise argparse.ArgumentTypeError(f"{text!r} is not an integer")
  if v < 0: raise argparse.ArgumentTypeError(f"{v} must be >= 0")
  return v


def finite_float(text: str) -> float:
  """Any finite number: 'nan' and 'inf' are refused (they pass every `<` test in the wrong way)."""
  try: v = float(text)
  except ValueError: raise argparse.ArgumentTypeError(f"{text!r} is not a number")
  if not math.isfinite(v): raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
  return v


def nonnegative_float(text: str) -> float:
  v = finite_float(text)
  if v < 0: raise argparse.ArgumentTypeError(f"{v} must be >= 0")
  return v


def positive_float(text: str) -> float:
  v = finite_float(text)
  if v <= 0: raise argparse.ArgumentTypeError(f"{v} must be > 0")
  return v


def probability(text: str) -> float:
  v = nonnegative_float(text)
  if v > 1: raise argparse.ArgumentTypeError(f"{v} must be between 0 and 1")
  return v


def float_range(lo: float, hi: float) -> Callable[[str], float]:
  """A finite float in [lo, hi], e.g. `type=float_range(0, 0.5)`."""
  def parse(text: str) -> float:
    v = finite_float(text)
    if not lo <= v <= hi: raise argparse.ArgumentTypeError(f"{v} must be between {lo:g} and {hi:g}")
    return v
  parse.__name__ = f"float in [{lo:g}, {hi:g}]"
  return parse


def int_range(lo: int, hi: int) -> Callable[[str], int]:
  """An integer in [lo, hi], e.g. `type=int_range(16, 4096)`."""
  def parse(text: str) -> int:
    try: v = int(text)
    except ValueError: raise argparse.ArgumentTypeError(f"{text!r} is not an integer")
    if not lo <= v <= hi: raise argparse.ArgumentTypeError(f"{v} must be between {lo} and {hi}")
    return v
  parse.__name__ = f"integer in [{lo}, {hi}]"
  return parse


def choice_list(*choices: str) -> Callable[[str], list[str]]:
  """'a,b' -> ['a', 'b'], each one of `choices` (a comma-separated subset, e.g. which benchmark cases to run)."""
  def parse(text: str) -> list[str]:
    vals = [v.strip() for v in text.split(",")]
    if not all(v in choices for v in vals): raise argparse.ArgumentTypeError(f"{text!r}: choose from {','.join(choices)}")
    return vals
  parse.__name__ = "comma-separated list"
  return parse


def int_list(text: str) -> list[int]:
  """'64,128' -> [64, 128]"""
  try: vals = [int(x) for x in text.split(",") if x.strip()]
  except ValueError: raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers")
  if not vals or any(v <= 0 for v in vals): raise argparse.ArgumentTypeError(f"{text!r} needs positive integers")
  return vals


def existing_path(text: str) -> str:
  if not os.path.exists(text): raise argparse.ArgumentTypeError(f"{text}: no such file or folder")
  return text


def existing_file(text: str) -> str:
  if not os.path.exists(text): raise argparse.ArgumentTypeError(f"{text}: no such file")
  if not os.path.isfile(text): raise argparse.ArgumentTypeError(f"{text}: not a file")
  return text


# ---- running ----------------------------------------------------------------------------------

class Terminated(KeyboardInterrupt):
  """SIGTERM, raised as an exception so that every `finally` runs (temporary files are removed)."""


def _ignore(signum, frame) -> None: pass


def _raise_terminated(signum, frame) -> NoReturn:
  # once: a second SIGTERM (a process-group kill often sends two) must not interrupt the clean-up it started.
  # A handler, not SIG_IGN, which a child started during the clean-up would inherit.
  signal.signal(signal.SIGTERM, _ignore)
  raise Terminated()


def out_of_memory_message(e: BaseException) -> str:
  detail = " ".join(str(e).split()) or "an allocation failed"
  return f"out of memory: {detail[:200]}; try a smaller size or batch"


def run_main(fn: Callable[[], int | None], *, open_device: bool = True) -> int:
  """Run a script's body with the project's error rules:
    UserError                   -> `error: <message>` on one line, exit 2
    out of memory (host/device) -> one line with what was asked for, exit 2
    Ctrl-C / SIGTERM            -> one line, exit 130 / 143; `finally` blocks run, so no temporary file is left
  The default device is opened as soon as the script's flags have parsed with this module's ArgumentParser (inside
  `fn`, or before run_main was called; a script that parses none opens it itself with common.device.open_device),
  so DEV=CUDA on a machine without CUDA is one line too, before any work, and `--help` or a flag argparse refuses
  costs no device start (a script's own checks after parse_args run with the device open)."""
  global _device_wanted, _flags_parsed
  previous = signal.signal(signal.SIGTERM, _raise_terminated) if _main_thread() else None
  try:
    _device_wanted = open_device
    if _flags_parsed: _open_device_when_wanted()      # main parsed its flags before calling run_main(run)
    return int(fn() or 0)
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  except Terminated:
    print("terminated: files already written are complete (they are written atomically)", file=sys.stderr)
    return 143
  except KeyboardInterrupt:
    print("\ninterrupted: files already written are complete (they are written atomically)", file=sys.stderr)
    return 130
  except MemoryError as e:
    print(f"error: {out_of_memory_message(e)}", file=sys.stderr)
    return 2
  except OSError as e:
    if e.errno != errno.ENOMEM: raise
    print(f"error: {out_of_memory_message(e)}", file=sys.stderr)
    return 2
  finally:
    _device_wanted = _flags_parsed = False
    if previous is not None: signal.signal(signal.SIGTERM, previous)


def _main_thread() -> bool:
  import threading
  return threading.current_thread() is threading.main_thread()


def check(name: str, measured: float, target: float, *, higher_is_better: bool = True, unit: str = "") -> bool:
  """Print `PASS`/`FAIL` for a success criterion with the measured value, in the spirit of
  tinygrad's TARGET_EVAL_ACC_PCT. Returns whether it passed."""
  ok = measured >= target if higher_is_better else measured <= target
  op = ">=" if higher_is_better else "<="
  print(f"{'PASS' if ok else 'FAIL'}: {name} = {measured:.4g}{unit} (target {op} {target:.4g}{unit})")
  return ok
