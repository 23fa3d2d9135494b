"""Images: reading, checking and writing picture files (formats, metadata, pixels, the
rendered output); nothing here knows of the journal or the daemon."""
