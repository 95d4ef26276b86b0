"""Catalog backfill on Ray Data: a model repository run over a whole listing of product images, from a
laptop to a cluster, with the service's preprocessing, sessions and decoding, resumable shard by shard
(``python -m backfill``; docs/backfill.md)."""
