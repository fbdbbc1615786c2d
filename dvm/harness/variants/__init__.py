"""whisper.cpp builds beside the PyPI wheel: registry (flags, where builds live, the environment that
uses one; a leaf), bindings (building a variant's Python bindings), tools (whisper-cli, whisper-bench,
whisper-server), sdist (files of the pywhispercpp source distribution), vulkan_patch (edits for older
Vulkan headers) and the command line (``python -m dvm.harness.variants build ...``, __main__.py).
"""
