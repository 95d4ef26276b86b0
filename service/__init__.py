"""The FastAPI inference service: ``create_app(settings)`` in :mod:`service.app`, ``python -m service``."""

__version__ = "0.1.0"
