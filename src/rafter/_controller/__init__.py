"""The driver side of a run: attempts, failure policy, checkpoints, callbacks, the Result."""
