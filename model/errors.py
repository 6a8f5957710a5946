"""Typed errors for bad input. The CLI prints ``str(err)`` as one line and exits 2.

Every message names the file (or folder), the field and what was expected, so a
researcher can fix the input without reading a traceback.
"""


class SaanError(Exception):
    """Base of every error caused by the user's input rather than a bug."""


class DataError(SaanError):
    """BAID folder, CSV file or column missing or malformed."""


class ImageError(DataError):
    """An image is missing or cannot be decoded, and the config says that is fatal."""


class WeightsError(SaanError):
    """A pretrained-weights file is missing, unreadable or does not fit the network."""


class CheckpointError(SaanError):
    """A checkpoint file is missing, corrupt or from an incompatible run."""


class EnvironmentFault(SaanError):
    """A place the run needs cannot be written or reached (permissions, disk full, read-only
    database): the operator must fix it; it says nothing about the configuration being trained."""
