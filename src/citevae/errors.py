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


class CheckpointError(CiteVAEError):
    """A training checkpoint is missing, unreadable, or belongs to another run."""


class TrainingDivergedError(CiteVAEError):
    """The training loss became NaN or infinite."""


def format_names(names, limit: int = 10) -> str:
    """Quote up to ``limit`` names for an error message, saying how many more there are."""
    names = list(names)
    shown = ", ".join(repr(name) for name in names[:limit])
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")
