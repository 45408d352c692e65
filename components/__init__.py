"""Custom TFX components of the fraud-detection pipeline: adapters only (`@component` functions and Beam graphs)
that read and write artifacts and call fraud.* for the work. They import fraud.* and TFX, nothing above."""
