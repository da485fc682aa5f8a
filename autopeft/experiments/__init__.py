"""The modes run.py offers (search, train, retrain, report, pipeline, ...) and the experiment pipeline."""
