"""Kafka topic names, in one place. Deployed names get ``kafka.topic_prefix`` (Config.topic)."""

SUBMISSIONS = "diagnostic.submissions"
OUTCOMES = "diagnostic.outcomes"
SCORES = "diagnostic.scores"
RETRAIN_REQUESTS = "model.retrain-requests"
LIFECYCLE = "model.lifecycle"
ENDPOINT_REQUESTS = "serving.requests"
# Internal to the stream. Valid submissions the scoring query could not score (no production
# model, or unusable output): they wait here, raw, and are scored when the version changes.
SCORE_RETRIES = "streaming.score-retries"
# The scoring query's per-batch progress (it commits no Delta table); landed in ops.stream_progress.
SCORER_PROGRESS = "streaming.scorer-progress"
# Challenger scores (streaming.shadow_aliases): ScoreIssued with the alias that scored them. Never
# on diagnostic.scores, so no application sees them; landed in gold.shadow_predictions.
SHADOW_SCORES = "streaming.shadow-scores"

ALL_TOPICS = [SUBMISSIONS, OUTCOMES, SCORES, RETRAIN_REQUESTS, LIFECYCLE, ENDPOINT_REQUESTS,
              SCORE_RETRIES, SCORER_PROGRESS, SHADOW_SCORES]
