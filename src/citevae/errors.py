"""Exceptions raised by citevae. All are ``ValueError`` subclasses so callers may catch broadly."""


class CiteVAEError(ValueError):
    """Base class of every error citevae raises for bad input."""


class DataValidationError(CiteVAEError):
    """The AnnData or its registered keys are not usable as given."""


class VocabularyError(CiteVAEError):
    """A perturbation, gene or time label is not in the saved vocabulary."""


class SplitLeakageError(CiteVAEError):
    """A split puts held-out conditions into training."""


class ModelFileError(CiteVAEError):
    """A saved model directory is missing, corrupt, or from an incompatible version."""
