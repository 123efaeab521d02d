"""The Sieve extensions, one module per group; importing this package registers them all
in ``registry.REGISTRY``."""

from pochta.sieve.extensions import (  # noqa: F401 - imported to register
    body,
    core,
    encoded,
    environment,
    fileinto,
    ihave,
    imap4flags,
    reject,
    variables,
)
