"""Kafka topic names, in one place. Deployed names get ``kafka.topic_prefix`` (Config.topic)."""

SUBMISSIONS = "diagnostic.submissions"
OUTCOMES = "diagnostic.outcomes"
SCORES = "diagnostic.scores"
RETRAIN_REQUESTS = "model.retrain-requests"
LIFECYCLE = "model.lifecycle"
ENDPOINT_REQUESTS = "serving.requests"
# Internal: the scorer sends itself a message here to run a micro-batch when rows wait to be
# scored but no data arrives (Spark starts a batch only for new data).
SCORER_WAKEUPS = "streaming.scorer-wakeups"

ALL_TOPICS = [SUBMISSIONS, OUTCOMES, SCORES, RETRAIN_REQUESTS, LIFECYCLE, ENDPOINT_REQUESTS,
              SCORER_WAKEUPS]
