"""Training support beyond the callbacks: checkpoints read and written safely, and resuming a stopped run."""
