"""Thin routes: parse, call the pipeline, let the app map errors."""
