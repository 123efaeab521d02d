"""Where the delivery side finds the scripts to run, and include finds the rest.

``sieve/scripts.py`` (the files under ``[sieve] scripts_dir`` and ``global_dir``) implements
``ScriptSource``; delivery (``deliver/sieve_delivery.py``) and the tests use it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

from pochta.sieve.context import ScriptLoader

__all__ = ["ScriptSource", "StoredScript"]


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredScript:
    """One script to run at delivery: the domain's global before script, the account's
    active script, or the domain's global after script (Dovecot's sieve_before, the
    personal script, sieve_after)."""

    name: str
    text: str
    scope: Literal["before", "personal", "after"]
    version: str = ""  # changes whenever the text does (mtime and size): a cache key


class ScriptSource(Protocol):
    def delivery_scripts(self, account: str) -> list[StoredScript]:
        """The scripts to run for ``account``, in order: before, personal, after (each
        present only when it exists; the personal one only when a script is active)."""
        ...

    def loader(self, account: str) -> ScriptLoader:
        """What ``include`` reads for ``account``: its own scripts (:personal) and the
        administrator's (:global)."""
        ...
