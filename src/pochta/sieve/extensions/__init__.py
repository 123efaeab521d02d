"""The Sieve extensions, one module per group; importing this package registers them all
in ``registry.REGISTRY``."""

from pochta.sieve.extensions import (  # noqa: F401 - imported to register
    body,
    core,
    date,  # sieve-ext: RFC 5260
    duplicate,  # sieve-ext: RFC 7352
    editheader,  # sieve-ext: RFC 5293
    encoded,
    environment,
    fileinto,
    ihave,
    imap4flags,
    include,  # sieve-ext: RFC 6609 (imports variables first: it wraps set)
    index,  # sieve-ext: RFC 5260 §6 (imports date and core first: it wraps their tests)
    reject,
    spamtest,  # sieve-ext: RFC 5235
    vacation,  # sieve-ext: RFC 5230, RFC 6131
    variables,
)
