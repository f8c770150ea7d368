"""Validation of landed data with Great Expectations (imported only where it validates)."""
