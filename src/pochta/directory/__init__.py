"""Domains, accounts, aliases, authentication: Dovecot's passdb/userdb, Postfix's virtual maps."""
