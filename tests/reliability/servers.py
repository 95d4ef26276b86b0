"""Settings of the reliability suite's shared servers (started by its conftest), for the tests to aim at."""

UPLOAD_LIMIT = 2 * 1024 * 1024
"""``max_upload_bytes`` of the shared server: small, so size limits are cheap to exceed."""
API_KEY = "reliability-suite-key-0123"
"""The key the ``keyed_server`` demands."""
