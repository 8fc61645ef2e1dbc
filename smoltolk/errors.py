"""Errors raised for people: each names the file, record or argument and what was expected."""


class SmolTolkError(Exception):
    """Base class of every error smoltolk raises on bad input."""


class ConfigError(SmolTolkError, ValueError):
    """A configuration value, file or override is invalid."""


class CheckpointError(SmolTolkError, OSError):
    """A checkpoint directory is missing, incomplete, corrupted or does not fit the model."""


class InputError(SmolTolkError, ValueError):
    """A model input (token ids, modality mask, positions) is malformed."""


class Interrupted(SmolTolkError):
    """Ctrl-C stopped a command; the message says what state it left."""


class Preempted(Interrupted):
    """SIGTERM or SIGUSR1 stopped training at a step's end, after a complete checkpoint (smoltolk.preempt)."""
