"""What a person sees: CPU latency, the report's records, figures, index.html and summary.json."""
from .latency import Latency, measure_latencies, measure_latency
from .records import LayerRecord, ModelResult, Sample, metrics_from_evaluation, summary
from .render import render_report

__all__ = ["Latency", "measure_latency", "measure_latencies", "LayerRecord", "ModelResult", "Sample", "metrics_from_evaluation",
           "summary", "render_report"]
