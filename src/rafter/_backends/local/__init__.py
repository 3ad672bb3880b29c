"""The local backend: workers are processes forked on this machine (see ``backend``)."""
