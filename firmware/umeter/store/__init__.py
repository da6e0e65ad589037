"""Power-loss-safe storage on SPI NOR: Journal (record log) and State (key -> latest value)."""
from .errors import StoreError  # noqa: F401
from .journal import Journal  # noqa: F401
from .region import Region, partitions  # noqa: F401
from .state import State, StateFull  # noqa: F401
