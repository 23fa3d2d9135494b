"""The commands that run once and print (``check``, ``init``, ``status``, ``retry``) and the
terminal view of ``once``: what the CLI calls besides the daemon itself."""
