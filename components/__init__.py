"""Custom TFX components of the fraud-detection pipeline."""
