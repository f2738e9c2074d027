"""The Tegra (Jetson Orin nvgpu/nvmap) backend for tinygrad 0.14.0 -- being built (issue 9).

Contract with common/: importing this package never imports tinygrad; `install()` registers the
backend with tinygrad before the first device is opened and raises with a one-line reason when it
cannot; `describe()` returns lines for `python3 -m common.device`.
"""
TEGRA_NODES = ("/dev/nvgpu/igpu0/ctrl", "/dev/nvmap")

def install() -> None:
  raise NotImplementedError("the Tegra backend is not built yet (issue 9)")

def describe() -> dict[str, str]:
  return {"tegra backend": "not built yet (issue 9)"}
