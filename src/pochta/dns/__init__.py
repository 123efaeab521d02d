"""DNS as pochta needs it: the records a hosted domain must publish, and checking them.

This package is ``pochta.dns``; dnspython is the top-level ``dns`` package. Modules here
always ``import dns.xxx`` absolutely, never relatively.
"""
