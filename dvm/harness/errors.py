"""The one exception type the CLI turns into a single error line."""


class DvmError(Exception):
    """A problem the user can act on; its message is printed as one line, no traceback."""
