"""Base of the errors the command line reports in one line, without a traceback."""


class IclreproError(Exception):
    """A problem with the user's input or stored files; the message names it and its place."""
