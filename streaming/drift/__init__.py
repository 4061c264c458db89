"""Drift detection inside the stream (docs/architecture.md).

- :mod:`.detectors` — :class:`GatedADWIN`, River's ADWIN with a learned reference and an
  effect-size gate (why these parameters: its module docstring);
- :mod:`.signals` — what is watched (covariate, prediction, concept) and the segments;
- :mod:`.monitor` — :class:`DriftMonitor`, detectors per (signal, segment), model versions,
  cooldown, deterministic ids (pure, no I/O);
- :mod:`.state` — the atomic JSON state file with the last applied batch id;
- :mod:`.hook` — :func:`make_drift_hook`, the step the stream's ``foreachBatch`` calls.
"""
