"""Exporting a trained configuration and loading it back to predict.

``load_export(folder).predict([...])`` is the way back in; every ``mode=train`` and
``mode=retrain`` run writes an export folder (see :mod:`autopeft.export.save`).
"""

from autopeft.export.load import load_export
from autopeft.export.predictor import Predictor
from autopeft.export.save import save_export

__all__ = ["Predictor", "load_export", "save_export"]
