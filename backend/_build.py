"""Build-time hooks (setuptools cmdclass, see pyproject.toml): ship `orin_tegra_backend.pth` into site-packages.

A wheel places top-level files of its build directory in site-packages, so `build_py` writes the .pth there. An editable
install (`pip install -e .`) builds a different wheel, so `editable_wheel` adds the same file to it. The file's one line
is `backend._startup.PTH_LINE`: a stat of the Tegra node, and only on a Jetson (or with TEGRA_FAKE=1) an import.
Only setuptools imports this module.
"""
import os
from setuptools.command.build_py import build_py as _build_py
from setuptools.command.editable_wheel import editable_wheel as _editable_wheel

PTH_NAME = "orin_tegra_backend.pth"

def pth_line() -> str:
  here = os.path.dirname(os.path.abspath(__file__))
  ns:dict = {}
  with open(os.path.join(here, "_startup.py")) as f: src = f.read()
  # read PTH_LINE without importing the backend package at build time
  start = src.index("PTH_LINE = ")
  exec(src[start:src.index("\n\n", start)], ns)
  return ns["PTH_LINE"]

class build_py(_build_py):
  def run(self):
    super().run()
    with open(os.path.join(self.build_lib, PTH_NAME), "w") as f: f.write(pth_line())
  def get_outputs(self, include_bytecode=True):
    return super().get_outputs(include_bytecode) + [os.path.join(self.build_lib, PTH_NAME)]

class editable_wheel(_editable_wheel):
  def _select_strategy(self, name, tag, build_lib):
    strategy = super()._select_strategy(name, tag, build_lib)
    class WithHook:
      def __enter__(self): return strategy.__enter__() and self
      def __exit__(self, *a): return strategy.__exit__(*a)
      def __call__(self, wheel, files, mapping):
        strategy(wheel, files, mapping)
        wheel.writestr(PTH_NAME, pth_line())
    return WithHook()
