"""Anomaly detectors: pure logic, one module per concern, no Kafka.

- `rolling`: exact rolling median/MAD, the robust baseline.
- `price_jump`, `volume_spike`: scored on each closed candle of a series (`market`
  bundles them per series for the candle stream).
- `stale_feed`: feeds that stop trading while the event time of their partition moves on.
- `divergence`: each exchange's close against the cross-exchange median per window.
- `rules`: thresholds from `anomaly_rules.toml`; `findings`: the `Anomaly` record.

A detector returns `Finding`s; the stream shells encode them with `anomaly_record()`.
Chain detectors plug in the same way: a pure class fed by a stream shell, returning
`Finding`s with `chain_id` and a `chain:N` subject.
"""
