"""The IMAP4rev2 / IMAP4rev1 protocol core (RFC 9051, RFC 3501): sans-IO command parser and
response writer. The asyncio server that uses it lives in ``pochta.access``."""
