"""Where segment state lives: :mod:`.memory` (embedded, the default) or :mod:`.redis` (shared
by replicas), behind the interface in :mod:`.base`. The service picks one from the settings;
nothing else knows which."""

from .base import (
    CheckNote,
    Epoch,
    SegmentPage,
    SegmentView,
    SharedStore,
    Snapshottable,
    Store,
    StoreStats,
    StoreUnavailable,
    Sweep,
)
from .memory import MemoryStore

__all__ = [
    "CheckNote",
    "Epoch",
    "MemoryStore",
    "SegmentPage",
    "SegmentView",
    "SharedStore",
    "Snapshottable",
    "Store",
    "StoreStats",
    "StoreUnavailable",
    "Sweep",
]
