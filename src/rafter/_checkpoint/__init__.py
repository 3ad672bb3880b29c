"""Checkpoint staging on workers (the driver side lives in ``rafter._controller.run_state``)."""
