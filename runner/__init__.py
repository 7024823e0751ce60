"""The runner: build-or-load, the process and measurement policies, equivalence.

Plain Python used by the pytest plugin, the memory child, ``infermatrix ab`` and bench/gpu_check.py."""
