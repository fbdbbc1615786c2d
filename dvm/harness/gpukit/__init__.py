"""What a bare GPU machine needs to run the CUDA matrix, and running it there.

A lent GPU machine has no package index and takes at most 64 MiB per call (the working tree
included), so the pieces travel as a bundle split into parts (parts.py): packed here (pack.py),
staged there call by call and run there in one go (device.py). ``python -m dvm.harness.gpukit``
and ``scripts/gpu-bench.sh`` are the commands.
"""
