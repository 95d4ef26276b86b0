"""Dynamic batching, generic over what it batches: :class:`Batcher` and what it is configured with,
returns and raises."""

from service.batching.batcher import Batcher
from service.batching.config import BatcherConfig, BatcherHooks, Completed
from service.batching.errors import BatcherError, BatcherStoppedError, DeadlineExceededError, QueueFullError

__all__ = ["Batcher", "BatcherConfig", "BatcherError", "BatcherHooks", "BatcherStoppedError", "Completed",
           "DeadlineExceededError", "QueueFullError"]
