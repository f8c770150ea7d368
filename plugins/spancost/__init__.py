"""spancost."""
