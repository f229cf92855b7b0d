"""The suite's command line and everything around a run: CLI, monitors, records, sweeps."""
