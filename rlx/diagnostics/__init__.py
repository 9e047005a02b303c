"""Precision forensics: trainer/sampler mismatch metrics and a layer-by-layer precision probe."""

from rlx.diagnostics.mismatch import mismatch_metrics
from rlx.diagnostics.precision import (
    compare_precisions,
    format_reports,
    precision_probe,
    precision_variants,
)

__all__ = ["compare_precisions", "format_reports", "mismatch_metrics", "precision_probe",
           "precision_variants"]
