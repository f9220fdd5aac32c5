"""The one exception type that the CLI turns into a single clear line and a non-zero exit."""


class UserError(Exception):
    """A problem the user can fix (bad path, bad format, missing device...).

    The CLI prints ``rtdenoise: error: <message>`` and exits with ``exit_code``; no traceback.
    """

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code
