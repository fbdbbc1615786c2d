"""`dvm bench`: plan (cells, matrices, clips), runner (the whole run), cellrun (one cell in a fresh
process, both sides), load (other processes' CPU meanwhile), anchor (whisper.cpp's whisper-cli on
the same work), choose (the configuration to serve), report (tables, plot) and gate (regressions).

Empty on purpose: the cell child (``python -m dvm.harness.bench.cellrun``) imports this package,
and what it imports shows up in the peak-RSS figure it reports.
"""
