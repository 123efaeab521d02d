"""Mail authentication: DKIM keys, signing and verification, SPF, DMARC, ARC."""
