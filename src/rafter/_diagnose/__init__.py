"""Evidence -> verdict: classify worker failures and explain the root cause first."""
