"""Peer servers for ``benchmarks/bench_peers.py``: the same model file, preprocessing and answer as the
service, served the way a plain FastAPI app and LitServe serve a model."""
