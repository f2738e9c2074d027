"""The flag translation matrix: legacy Jetson flags -> tinygrad 0.14.0's DEV."""
import pytest
from common.env import resolve, DeviceFlagError, target_devices, target_interface, tinygrad_devices
from conftest import run_py, assert_one_line_error

DEVICES = tinygrad_devices()


def test_tinygrad_devices_found_without_importing_it():
  assert {"NV", "CUDA", "CPU", "AMD", "METAL", "NULL"} <= set(DEVICES)


@pytest.mark.parametrize("flag,dev", [("NV", "NV"), ("CUDA", "CUDA"), ("CPU", "CPU"), ("AMD", "AMD"), ("CL", "CL"),
                                      ("METAL", "METAL"), ("NULL", "NULL"), ("CLANG", "CPU"), ("LLVM", "CPU:LLVM")])
def test_each_legacy_flag(flag, dev):
  r = resolve({flag: "1"}, DEVICES)
  assert r.dev == dev and flag in r.remove and r.requested == {flag: "1"}
  assert r.wants_nv == (dev == "NV")


def test_nothing_requested_lets_tinygrad_pick():
  r = resolve({}, DEVICES)
  assert r.dev is None and r.remove == [] and not r.wants_nv


@pytest.mark.parametrize("dev", ["NV", "CUDA", "CPU:LLVM", "TEGRA+NV", "PCI+NV", "NV:1", "CUDA;CPU", "CUDA:PTX:sm_87"])
def test_dev_passes_through_untouched(dev):
  assert resolve({"DEV": dev}, DEVICES).dev == dev


def test_tegra_interface_syntax():
  r = resolve({"DEV": "TEGRA+NV"}, DEVICES)
  assert r.wants_nv and r.wants_tegra
  assert target_devices("TEGRA+NV") == ["NV"] and target_interface("TEGRA+NV") == "TEGRA" and target_interface("NV") == ""


def test_flag_zero_is_ignored_and_removed():
  r = resolve({"NV": "0", "CUDA": "1"}, DEVICES)
  assert r.dev == "CUDA" and set(r.remove) == {"NV", "CUDA"}


def test_non_numeric_value_is_not_a_device_flag():
  r = resolve({"CUDA": "/usr/local/cuda"}, DEVICES)
  assert r.dev is None and r.remove == []


def test_flag_agreeing_with_dev_is_fine():
  assert resolve({"NV": "1", "DEV": "TEGRA+NV"}, DEVICES).dev == "TEGRA+NV"


@pytest.mark.parametrize("env,msg", [({"NV": "1", "CUDA": "1"}, "conflicting device flags"),
                                     ({"CPU": "1", "DEV": "CUDA"}, "conflicts with DEV=CUDA"),
                                     ({"DEV": "FOO"}, "names no tinygrad device 'FOO'"),
                                     ({"DEV": "TEGRA+FOO"}, "names no tinygrad device 'FOO'"),
                                     ({"NV": "2"}, "NV=2 is not understood")])
def test_conflicts_and_unknown_devices(env, msg):
  with pytest.raises(DeviceFlagError, match=msg): resolve(env, DEVICES)


def test_same_device_twice_is_not_a_conflict():
  assert resolve({"CPU": "1", "CLANG": "1"}, DEVICES).dev == "CPU"


# --- the same, end to end through a real process ---------------------------------------------

def test_cpu_flag_reaches_tinygrad():
  r = run_py("-c", "import common, os; from tinygrad import Device; print(Device.DEFAULT, os.environ.get('CPU'))", env={"CPU": "1"})
  assert r.returncode == 0, r.stderr
  assert r.stdout.split() == ["CPU", "None"]


def test_jitbeam_beam_debug_pass_through():
  r = run_py("-c", "import common, os; from tinygrad.helpers import BEAM, DEBUG, getenv; print(os.environ['JITBEAM'], BEAM.value, DEBUG.value)",
             env={"CPU": "1", "JITBEAM": "3", "BEAM": "2", "DEBUG": "0"})
  assert r.returncode == 0, r.stderr
  assert r.stdout.split() == ["3", "2", "0"]


def test_conflict_is_one_line_exit_2():
  assert_one_line_error(run_py("-m", "common.device", env={"NV": "1", "CUDA": "1"}), "conflicting device flags")


def test_unknown_device_is_one_line_exit_2():
  assert_one_line_error(run_py("-m", "common.device", env={"DEV": "FOO"}), "FOO")


def test_nv_without_nvidia_gpu_is_one_line_exit_2():
  import os
  if os.path.exists("/dev/nvidiactl") or os.path.exists("/dev/nvgpu/igpu0/ctrl"): pytest.skip("this machine has an NVIDIA GPU")
  assert_one_line_error(run_py("-m", "common.device", env={"NV": "1"}), "no NVIDIA GPU found", "/dev/nvidiactl", "/dev/nvmap")


def test_cuda_without_driver_is_one_line_exit_2():
  import ctypes.util
  if ctypes.util.find_library("cuda"): pytest.skip("libcuda is present")
  assert_one_line_error(run_py("-m", "common.device", env={"CUDA": "1"}), "cannot open device CUDA")


def test_device_report_names_everything():
  r = run_py("-m", "common.device", env={"CPU": "1", "JITBEAM": "2"})
  assert r.returncode == 0, r.stderr
  for label in ("tinygrad", "requested flags", "resolved DEV", "device", "renderer", "compiler", "tegra nodes", "tegra backend", "JITBEAM"):
    assert any(line.startswith(label) for line in r.stdout.splitlines()), label
  assert "0.14.0" in r.stdout and "CPU=1" in r.stdout and "JITBEAM=2" in r.stdout


# --- the Tegra hook ------------------------------------------------------------------------------

class FakeBackend:
  def __init__(self, fail: str | None = None): self.fail, self.installed, self.matvec = fail, 0, 0
  def install(self):
    if self.fail: raise RuntimeError(self.fail)
    self.installed += 1
  def install_matvec_fix(self): self.matvec += 1
  def install_program_cache(self): pass
  def describe(self): return {}


@pytest.fixture
def fake_jetson(tmp_path):
  nodes = (str(tmp_path / "ctrl"), str(tmp_path / "nvmap"))
  for n in nodes: open(n, "w").close()
  return nodes


@pytest.mark.parametrize("env", [{}, {"NV": "1"}, {"DEV": "NV"}, {"DEV": "TEGRA+NV"}])
def test_jetson_loads_backend_when_nv_or_nothing_requested(env, fake_jetson, monkeypatch):
  from common import env as envmod
  fake = FakeBackend()
  monkeypatch.setitem(__import__("sys").modules, "backend", fake)
  monkeypatch.setattr(envmod, "nvidia_gpu_evidence", lambda: list(fake_jetson))
  state = envmod.apply(dict(env), nodes=fake_jetson)
  assert state.tegra == "installed" and fake.installed == 1
  assert state.matvec_fix == "on" and fake.matvec == 1     # on by default once the Tegra backend is in


def test_jetson_with_cuda_requested_leaves_backend_alone(fake_jetson, monkeypatch):
  from common import env as envmod
  fake = FakeBackend()
  monkeypatch.setitem(__import__("sys").modules, "backend", fake)
  state = envmod.apply({"CUDA": "1"}, nodes=fake_jetson)
  assert fake.installed == 0 and state.tegra.startswith("Jetson detected") and state.matvec_fix == "off"


def test_no_nodes_no_backend(tmp_path, monkeypatch):
  from common import env as envmod
  fake = FakeBackend()
  monkeypatch.setitem(__import__("sys").modules, "backend", fake)
  state = envmod.apply({"CPU": "1"}, nodes=(str(tmp_path / "absent"), str(tmp_path / "absent2")))
  assert fake.installed == 0 and state.tegra.startswith("not a Jetson")


def test_backend_failure_warns_and_carries_on(fake_jetson, monkeypatch, capsys):
  from common import env as envmod
  monkeypatch.setitem(__import__("sys").modules, "backend", FakeBackend(fail="nvgpu ioctl ALLOC_AS failed: EINVAL"))
  monkeypatch.setattr(envmod, "nvidia_gpu_evidence", lambda: list(fake_jetson))
  env = {"NV": "1"}
  state = envmod.apply(env, nodes=fake_jetson)
  assert env == {"DEV": "NV"} and state.tegra == "not loaded: nvgpu ioctl ALLOC_AS failed: EINVAL"
  assert "tegra backend not loaded: nvgpu ioctl ALLOC_AS failed: EINVAL" in capsys.readouterr().err


def test_matvec_fix_opt_in_and_opt_out(fake_jetson, monkeypatch):
  from common import env as envmod
  fake = FakeBackend()
  monkeypatch.setitem(__import__("sys").modules, "backend", fake)
  monkeypatch.setattr(envmod, "nvidia_gpu_evidence", lambda: list(fake_jetson))
  assert envmod.apply({"DEV": "CUDA", "MATVEC_FIX": "1"}, nodes=("/nonexistent",)).matvec_fix == "on"
  assert envmod.apply({"NV": "1", "MATVEC_FIX": "0"}, nodes=fake_jetson).matvec_fix == "off"


def test_copy_into_overwrites_a_jit_input_in_place_and_refuses_what_does_not_fit():
  import numpy as np
  import common  # noqa: F401
  from tinygrad import Tensor, TinyJit, dtypes
  from common.device import copy_into
  frame = Tensor.zeros(4, 5, dtype=dtypes.uint8).contiguous().realize()
  double = TinyJit(lambda x: (x.float() * 2).realize())
  for i in range(5):                                   # replays from the 3rd call read the new bytes
    assert copy_into(frame, np.full((4, 5), i, np.uint8)) is frame
    assert (double(frame).numpy() == 2 * i).all(), i
  for bad in (np.zeros((4, 5), np.float32), np.zeros((4, 6), np.uint8), np.zeros((5, 4), np.uint8)):
    with pytest.raises(ValueError, match="copy_into"): copy_into(frame, bad)
  with pytest.raises(ValueError, match="realized, contiguous"): copy_into(frame.T, np.zeros((5, 4), np.uint8))
  with pytest.raises(ValueError, match="realized, contiguous"): copy_into(Tensor.zeros(4, 5, dtype=dtypes.uint8), np.zeros((4, 5), np.uint8))
