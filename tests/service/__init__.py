"""Helpers for the service tests (fakes, image bytes)."""
