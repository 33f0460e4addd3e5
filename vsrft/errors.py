"""The one exception type users see: its message is the whole one-line error."""


class VsrftError(Exception):
    """A problem with the user's input or environment, reported as one line (exit code 2)."""
