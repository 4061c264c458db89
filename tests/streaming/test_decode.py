"""The stream's decoding pass and the endpoint agree: one validator, one featurizer.

Spark-free: ``decode_batch`` is the function the stream runs on each Arrow batch. Over the
hostile corpus of tests/reliability (every kind of broken event, mixed with valid ones) it gives
each record the verdict and reason code the contract gives it, and the endpoint's scoring path
(validated events → flat arrays → the model) predicts exactly what the stream's model input
(decoded responses) gives the model.
"""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
import pyarrow as pa
import pytest

from learnscore.schemas.domain import Domain
from learnscore.schemas.events import DIAGNOSTIC_SUBMITTED, OUTCOME_OBSERVED, validate_bytes
from learnscore.streaming.decode import KAFKA_FIELDS, OUTCOME, SUBMISSION, decode_batch


def _corpus(small_history_events):
    from tests.reliability.test_hostile_input import Materializer, draw_recipes

    made = Materializer(small_history_events[0][2000:2400], datetime.now(timezone.utc))
    recipes = draw_recipes()
    for recipe in recipes:
        if recipe["topic"].endswith("submissions"):
            made.submission(recipe)
    for recipe in recipes:
        if recipe["topic"].endswith("outcomes"):
            made.outcome(recipe)
    return made


def _batch(records, now) -> pa.RecordBatch:
    n = len(records)
    return pa.RecordBatch.from_arrays([
        pa.array([r.key for r in records], pa.binary()), pa.array([r.value for r in records], pa.binary()),
        pa.array(["t"] * n), pa.array([0] * n, pa.int32()), pa.array(range(n), pa.int64()),
        pa.array([now] * n, pa.timestamp("us", tz="UTC"))], schema=pa.schema(KAFKA_FIELDS))


@pytest.fixture(scope="module")
def corpus(small_history_events):
    return _corpus(small_history_events)


def test_the_stream_and_the_contract_give_every_hostile_record_the_same_verdict(corpus):
    for records, kind, contract in ((corpus.submissions, SUBMISSION, DIAGNOSTIC_SUBMITTED),
                                    (corpus.outcomes, OUTCOME, OUTCOME_OBSERVED)):
        decoded = decode_batch(_batch(records, corpus.now), kind, Domain(), now=corpus.now)
        codes = decoded.column("reason_code").to_pylist()
        for record, code in zip(records, codes):
            assert code == validate_bytes(contract, record.value, corpus.now).reason_code, (record.kind, code)
        ids = decoded.column("event_id").to_pylist()
        assert [i for i, c in zip(ids, codes) if c is None] == \
            [r.event_id for r, c in zip(records, codes) if c is None]


def test_the_endpoint_body_parser_and_the_stream_refuse_the_same_records(corpus):
    """The endpoint parses bodies with another JSON parser (orjson) than the stream's validator:
    over the hostile corpus (deep nesting, duplicate keys, BOMs, lone surrogates included) both
    accept and refuse the same records, for a reason the record's recipe allows."""
    from learnscore.serving.validation import parse_submissions

    judged = 0
    for record in corpus.submissions:
        if record.value is None or record.kind == "not_object":  # a JSON list is a batch to the endpoint
            continue
        contract = validate_bytes(DIAGNOSTIC_SUBMITTED, record.value, corpus.now)
        body = parse_submissions(record.value, max_batch=100, now=corpus.now)
        given = body.problems[0].reason_code if body.problems else None
        # A 40-digit integer is out of range to one parser and a float (wrong type) to the other:
        # either reason the recipe allows is right.
        assert body.ok == contract.ok and (body.ok or given in record.codes | {contract.reason_code}), \
            (record.kind, body.problems[:1], contract.reason)
        judged += 1
    assert judged > len(corpus.submissions) // 2


def test_the_endpoint_path_and_the_stream_path_predict_the_same(corpus, fitted_model):
    from learnscore.model.features import flatten_events, model_input_from_arrow

    valid = [r for r in corpus.submissions if validate_bytes(DIAGNOSTIC_SUBMITTED, r.value, corpus.now).ok]
    events = [validate_bytes(DIAGNOSTIC_SUBMITTED, r.value, corpus.now).event for r in valid]
    decoded = decode_batch(_batch(valid, corpus.now), SUBMISSION, Domain(), now=corpus.now)
    stream = fitted_model.predict(model_input_from_arrow(pa.Table.from_batches([decoded])))
    endpoint = fitted_model.predict_flat(flatten_events(events))
    for column in ("progress_score", "p_beginner", "p_developing", "p_proficient", "p_advanced"):
        assert np.array_equal(stream[column].to_numpy(), endpoint[column]), column
    assert stream["comprehension_level"].tolist() == list(endpoint["comprehension_level"])
