"""Switch from root to an unprivileged user once the listeners are bound.

Ports below 1024 need root (or CAP_NET_BIND_SERVICE); nothing else does. So the server binds
every listener first, then calls ``drop_privileges``, like Postfix's master and smtpd
(``set_ugid`` in postfix/src/util/set_ugid.c): supplementary groups, then the group, then the
user, and finally a check that root cannot be had back.
"""

from __future__ import annotations

import grp
import os
import pwd
import stat
from collections.abc import Iterable
from pathlib import Path

from pochta.logs import get_logger

log = get_logger("server")


class PrivilegeError(Exception):
    """The switch to ``run_as_user`` cannot be made; the message says what to change."""


def _resolve(user: str, group: str) -> tuple[int, int]:
    try:
        pw = pwd.getpwnam(user)
    except KeyError:
        raise PrivilegeError(
            f"server.run_as_user: no such user '{user}'; create it (useradd --system {user}) "
            "or change the setting"
        ) from None
    if not group:
        return pw.pw_uid, pw.pw_gid
    try:
        gr = grp.getgrnam(group)
    except KeyError:
        raise PrivilegeError(
            f"server.run_as_group: no such group '{group}'; create it (groupadd --system "
            f"{group}) or change the setting"
        ) from None
    return pw.pw_uid, gr.gr_gid


def _chown(paths: Iterable[Path], uid: int, gid: int) -> list[str]:
    """Hand the paths the server writes to the new user; not recursive on purpose."""
    changed: list[str] = []
    for path in paths:
        try:
            st = path.lstat()
        except FileNotFoundError:
            continue
        if st.st_uid == uid and st.st_gid == gid:
            continue
        try:
            os.chown(path, uid, gid, follow_symlinks=False)
        except OSError as exc:
            raise PrivilegeError(
                f"cannot give {path} to uid {uid}: {exc.strerror}; run: chown {uid}:{gid} {path}"
            ) from None
        changed.append(str(path))
    return changed


def _readable_by(path: Path, uid: int, gids: set[int]) -> bool:
    """Whether the permission bits let uid/gids read ``path`` (parents are not checked)."""
    try:
        st = path.stat()
    except OSError:
        return True  # nothing to warn about here; whoever reads it reports the error
    if st.st_uid == uid:
        return bool(st.st_mode & stat.S_IRUSR)
    if st.st_gid in gids:
        return bool(st.st_mode & stat.S_IRGRP)
    return bool(st.st_mode & stat.S_IROTH)


def drop_privileges(
    user: str, group: str = "", *, chown: Iterable[Path] = (), readable: Iterable[Path] = ()
) -> None:
    """Become ``user`` (and ``group``, else the user's primary group) if running as root.

    ``chown`` lists the paths the server writes (the data dir itself, its queue and mail
    directories, the directory database and its -wal/-shm files); as root they are given to
    the user first. ``readable`` lists files read later (the config, on reload): a warning
    names those the user will not be able to read. Raises PrivilegeError with a message that
    says what to do.
    """
    euid = os.geteuid()
    if not user:
        if euid == 0:
            log.warning(
                "running_as_root",
                hint="set server.run_as_user to an unprivileged user, e.g. pochta",
            )
        return
    uid, gid = _resolve(user, group)
    if euid != 0:
        if euid != uid:
            log.warning(
                "privileges_not_dropped",
                reason="not started as root",
                run_as_user=user,
                uid=euid,
            )
        return
    if uid == 0:
        log.warning("running_as_root", run_as_user=user)
        return
    changed = _chown(chown, uid, gid)
    gids = {gid, *os.getgrouplist(user, gid)}
    for path in readable:
        if not _readable_by(path, uid, gids):
            log.warning(
                "unreadable_after_drop",
                path=str(path),
                user=user,
                hint=f"reload (SIGHUP) will fail; run: chgrp {gid} {path} && chmod g+r {path}",
            )
    if changed:
        log.info("data_dir_chowned", user=user, paths=",".join(changed))
    # Order matters: groups while still root, then the gid, the uid last (setuid(2) would
    # take away the right to change groups).
    os.setgroups([])
    os.initgroups(user, gid)
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    # Paranoia, as Postfix: prove that root cannot be regained.
    try:
        os.setuid(0)
    except PermissionError:
        pass
    else:
        raise PrivilegeError(f"server.run_as_user: setuid(0) still works after switching to {user}")
    if os.getuid() != uid or os.geteuid() != uid or os.getgid() != gid or os.getegid() != gid:
        raise PrivilegeError(f"server.run_as_user: the switch to {user} did not take effect")
    log.info(
        "privileges_dropped",
        user=user,
        uid=uid,
        gid=gid,
        groups=",".join(str(g) for g in os.getgroups()),
    )
