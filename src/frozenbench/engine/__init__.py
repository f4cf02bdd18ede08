"""Training engine: the resumable loop shared by every task."""
