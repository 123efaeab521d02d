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

# Branch sieve-ext (RFC 5260, 5293, 7352, 5235, 5230/6131, 6609); index after date (it wraps it).
from pochta.sieve.extensions import (  # noqa: E402, F401, I001 - imported to register
    date,
    index,
    duplicate,
    spamtest,
    editheader,
    vacation,
)
