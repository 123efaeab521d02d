"""The `pochta` command line."""
