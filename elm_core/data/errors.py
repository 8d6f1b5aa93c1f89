"""Errors a user can cause by pointing a task at missing or damaged data; each message is one line."""


class DatasetError(ValueError):
    """A dataset cannot be used as asked (bad option, missing or damaged file)."""


class DatasetUnavailable(DatasetError):
    """The data is not on disk and could not be downloaded."""


class DatasetCorrupt(DatasetError):
    """A data file exists but has the wrong size, checksum or layout."""
