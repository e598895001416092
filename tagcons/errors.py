"""Exception types shared by the library; the CLI maps them to exit codes.

BadInputError (and subclasses) -> exit 2, StrictFailure -> exit 3, anything else -> exit 1.
"""


class TagconsError(Exception):
    """Base class of every error tagcons raises on purpose."""


class BadInputError(TagconsError, ValueError):
    """The user's input (file, column, flag, path) is wrong; the message says what and how to fix it.

    Also a ValueError, the exception scikit-learn's estimator rules expect for bad fit input."""


class CacheBusyError(BadInputError):
    """Another writer holds the cache lock."""


class FingerprintMismatchError(BadInputError):
    """A cache was produced with other settings than the ones asked for."""


class BackboneUnavailableError(BadInputError):
    """A backbone could not be loaded (hub unreachable, bad local directory)."""


class WriteFailedError(BadInputError):
    """Writing a file failed (disk full, read-only, I/O error); nothing half-written was left."""


class StrictFailure(TagconsError):
    """--strict was given and some items failed; everything else was saved."""


def first_line(error: BaseException) -> str:
    """The first line of an exception's message (its type name when the message is empty)."""
    return (str(error).strip().splitlines() or [type(error).__name__])[0]
