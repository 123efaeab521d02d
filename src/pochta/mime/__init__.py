"""MIME structure of stored messages: byte-exact part offsets, IMAP ENVELOPE and
BODYSTRUCTURE, sections, and text for search."""
