"""Sans-IO Sendmail milter protocol, version 6 (libmilter's ``mfdef.h``): the MTA side.

``constants.py`` the command and reply codes, the action and protocol flags; ``events.py``
the commands the MTA sends and the replies a milter gives, as frozen dataclasses;
``codec.py`` frames (bytes in, events out, a length limit on every frame), the encoders of
both directions and the option negotiation. The milter protocol is not an RFC: the
reference is Sendmail's ``include/libmilter/mfdef.h`` and ``libmilter/docs/``.
"""
