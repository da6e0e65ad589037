"""Power-loss-safe storage on SPI NOR: Journal (record log) and State (key -> latest value)."""
from .errors import StoreError  # noqa: F401
