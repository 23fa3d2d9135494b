"""Intake: watching the folders, waiting for files to settle, the folder rules and the
checks a file passes before it becomes a job."""
