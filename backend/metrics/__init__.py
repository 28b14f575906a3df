"""Request metrics folded once (`fold.RequestMetrics`) and exported to Prometheus (`prometheus`)."""

from backend.metrics.fold import MetricsSnapshot, RequestMetrics, summary_line

__all__ = ["MetricsSnapshot", "RequestMetrics", "summary_line"]
