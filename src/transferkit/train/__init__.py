"""The one training loop and its helpers (seeding, schedules, checkpoints, inference)."""
