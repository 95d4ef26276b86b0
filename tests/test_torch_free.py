"""The serving path must never import torch: it is not installed in the service's image."""

import subprocess
import sys

import pytest

SERVING_MODULES = [
    "catalog.taxonomy", "catalog.dataset", "catalog.metric", "catalog.real_labels",
    "catalog.preprocessing", "catalog.decoding", "catalog.manifest",
]


@pytest.mark.parametrize("module", SERVING_MODULES)
def test_module_does_not_import_torch(module):
    code = f"import sys, {module}; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
