"""Sieve (RFC 5228 and its extensions): the users' mail filters, run at local delivery.

The interpreter is pure (no I/O): ``script.compile_script`` turns a script's text into a
``Script`` or raises ``errors.SieveError`` with the line and column; ``script.run_script``
runs it against a ``context.MessageContext`` and returns a ``actions.SieveResult``, the
actions for the delivery side (``deliver/sieve_delivery.py``) to carry out.
"""
