"""Fair tuning: one Optuna study per arm, equal budgets, resumable and prunable, then a five-seed confirmation."""
