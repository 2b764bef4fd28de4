"""A run's life: the config schema and its checks, launch, signals, resume, lock, records, SLURM, console, errors."""
