"""Code that runs inside a worker process (any backend): bootstrap, session, report channel."""
