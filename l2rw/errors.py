"""Errors that end a run with a one-paragraph message instead of a traceback."""


class UserError(Exception):
    """A problem the user can fix (bad config, missing files); printed without a traceback."""


class ConfigError(UserError):
    """The composed configuration is inconsistent or names an unknown option."""


class DataError(UserError):
    """Dataset files are missing, unreadable or cannot be downloaded."""


class StorageError(UserError):
    """A file could not be written (disk full, permissions); the previous copy is intact."""
