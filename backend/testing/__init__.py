"""Test tooling for the Tegra backend; never used on a Jetson's normal path.

`fake_driver` is a fake Orin (nvgpu + nvmap at the ioctl level, and a GPU that runs tinygrad's kernels with tinygrad's
Python emulator); `kernel_facts` is the table of constants and rules it follows, each with the L4T header or driver
source line it comes from; `mutation_check` applies single faults to the backend and reports which tests catch them.
"""
