"""The one exception the storage layer raises for anything it cannot parse or trust."""


class StoreError(Exception):
    """A device or image that is not (or no longer) a valid store: corrupt, foreign or worn out."""
