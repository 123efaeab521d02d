"""Dovecot's Pigeonhole Sieve test suite, run against pochta's interpreter.

``layout`` finds the ``.svtest`` files and their ``test`` blocks and says which files are
skipped and why; ``world`` is the testsuite's global state (current message and envelope,
the fake mail store, captured SMTP, configuration); ``testsuite`` registers the
``vnd.dovecot.testsuite`` extension on the interpreter's registry; ``harness`` runs one file;
``run`` is the command line (``python -m tests.sieve.pigeonhole.run``) and the expected
results (``expected.txt``).
"""
