"""Helpers to test pipelines and brokers (filled in below)."""
