"""The one exception type for mistakes the user can fix (a path, a column, a hyper-parameter)."""


class InputError(ValueError):
    """Invalid user input: the message names the culprit, the value given and the fix.

    The command-line entry points print the message alone and exit with status 2; any other
    exception is a bug and keeps its traceback.
    """


class TrainingDiverged(InputError):
    """The loss became NaN or infinite: a hyper-parameter problem the user can fix."""
