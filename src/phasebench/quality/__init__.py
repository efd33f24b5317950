"""Quality probes under load: a small fixed probe set mixed into a run, scored after it, checked against a
reference, and a broken server caught (see docs/quality.md)."""

from .block import DEFAULT_THRESHOLD, QualityOptions, apply_validity, options_for, quality_block
from .probes import Probe, ProbeSet, QualityError, load_probe_set
from .reference import Reference, agreement, reference_from_run

__all__ = [
           "DEFAULT_THRESHOLD",
           "Probe",
           "ProbeSet",
           "QualityError",
           "QualityOptions",
           "Reference",
           "agreement",
           "apply_validity",
           "load_probe_set",
           "options_for",
           "quality_block",
           "reference_from_run",
]
