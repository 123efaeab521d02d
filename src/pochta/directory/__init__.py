"""Domains, accounts, aliases and authentication (Dovecot's passdb/userdb, Postfix's virtual maps)."""
