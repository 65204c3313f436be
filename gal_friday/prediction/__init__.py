"""PredictionService: LightGBM models turned into calibrated probabilities, off the event loop."""
