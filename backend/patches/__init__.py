"""Patches to tinygrad 0.14.0 itself that are not specific to the Orin: they apply to any device.

`matvec` gives fp16 (and other CAST/MUL-wrapped) matrix-vector products a bandwidth-bound layout; `bench_matvec`
measures it. Importing this package never imports tinygrad.
"""
