"""``python -m src.report SWEEP_DIR [SWEEP_DIR ...] [--out DIR] [--alpha 0.05]``: see ``src.report.tables``."""
import sys

from src.report.tables import main

if __name__ == "__main__":
    sys.exit(main())
