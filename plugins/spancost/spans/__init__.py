"""Span ingestion: OTLP decoding, normalisation and row rules, the S3 key layout, the loader."""
