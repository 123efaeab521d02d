"""MIME structure of stored messages: byte-exact part offsets, IMAP ENVELOPE and BODYSTRUCTURE, sections, text for search."""
