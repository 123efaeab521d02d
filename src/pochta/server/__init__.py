"""The process runtime of ``pochta serve``: listeners, privilege drop, signals, reload.

``app.Server`` binds every configured listener as root, drops to ``server.run_as_user``,
opens the directory and hands each accepted connection to the service registered for the
listener (``services.SERVICES``).
"""
