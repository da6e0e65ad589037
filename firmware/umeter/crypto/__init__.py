# Sealing errors, shared by seal.py, rollback.py and the keystore. Kept free of imports so that pure-logic
# modules (rollback) load under CPython too. No message ever contains key material.


class SealError(Exception):
    """A sealed record could not be produced or opened."""


class TamperError(SealError):
    """A record or the chain was altered: modified bytes, deleted, reordered or spliced records."""


class WrongKeyError(SealError):
    """The key at hand is not the key that sealed the record."""


class UnknownAlgorithm(SealError):
    """The record names a format version, algorithm id or flag this firmware does not know."""


class KeyMissing(SealError):
    """No device key is provisioned (or none for the epoch asked for)."""
