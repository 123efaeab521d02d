"""The IMAP session's clocks (issue 12 point 9): a login deadline that bytes do not move,
and a deadline for each command that its literals extend. The time is passed in: no test
here waits."""

from __future__ import annotations

from pochta.access.imap_timers import SessionTimers
from pochta.config.settings import IMAPSettings

SETTINGS = IMAPSettings(
    idle_timeout_seconds=1800,
    login_timeout_seconds=60,
    command_timeout_seconds=300,
    min_literal_bytes_per_second=1000,
)


def test_login_deadline_is_not_moved_by_a_trickle() -> None:
    timers = SessionTimers(SETTINGS, connected_at=1000.0)
    # One byte every 5 seconds: each read waits only for what is left of the minute.
    for i in range(12):
        now = 1000.0 + 5 * i
        wait = timers.next_wait(now, logged_in=False, in_command=i > 0, literal_octets=0)
        assert wait.seconds == 60 - 5 * i
        timers.command_done()  # even whole commands (NOOP, NOOP, ...) do not help
    wait = timers.next_wait(1061.0, logged_in=False, in_command=True, literal_octets=0)
    assert wait.seconds == 0
    assert "Log in within 60 seconds" in wait.bye


def test_logged_in_sessions_wait_for_idle_between_commands() -> None:
    timers = SessionTimers(SETTINGS, connected_at=0.0)
    wait = timers.next_wait(5000.0, logged_in=True, in_command=False, literal_octets=0)
    assert wait.seconds == 1800
    assert "idle" in wait.bye


def test_a_command_must_arrive_in_time_and_literals_add_time() -> None:
    timers = SessionTimers(SETTINGS, connected_at=0.0)
    # The first octet of a command starts its clock; later reads do not restart it.
    assert timers.next_wait(100.0, logged_in=True, in_command=True, literal_octets=0).seconds == 300
    wait = timers.next_wait(350.0, logged_in=True, in_command=True, literal_octets=0)
    assert wait.seconds == 50
    assert wait.bye == "Command took too long to arrive"
    # A 1 MB APPEND announced: 1000 more seconds at 1000 octets a second.
    wait = timers.next_wait(350.0, logged_in=True, in_command=True, literal_octets=1_000_000)
    assert wait.seconds == 1050
    late = timers.next_wait(1401.0, logged_in=True, in_command=True, literal_octets=1_000_000)
    assert late.seconds == 0


def test_each_command_gets_its_own_clock() -> None:
    timers = SessionTimers(SETTINGS, connected_at=0.0)
    timers.next_wait(100.0, logged_in=True, in_command=True, literal_octets=0)
    timers.command_done()  # the parser handed the command out; the next one is pipelined
    assert timers.next_wait(390.0, logged_in=True, in_command=True, literal_octets=0).seconds == 300
    # Nothing pending: the command clock is off.
    assert (
        timers.next_wait(900.0, logged_in=True, in_command=False, literal_octets=0).seconds == 1800
    )
