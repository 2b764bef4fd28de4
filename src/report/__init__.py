"""``python -m src.report``: the runs a sweep wrote -> groups -> rows -> statistics -> tables and figures."""
