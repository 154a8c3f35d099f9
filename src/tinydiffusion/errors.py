"""The one exception type users see: its message is a sentence that says what is wrong and what to do."""


class UserError(Exception):
    """Bad input from the user (names, files, values). The CLI prints it and exits with code 2."""
