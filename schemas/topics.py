"""Kafka topic names, in one place. Deployed names get ``kafka.topic_prefix`` (Config.topic)."""

SUBMISSIONS = "diagnostic.submissions"
OUTCOMES = "diagnostic.outcomes"
SCORES = "diagnostic.scores"
RETRAIN_REQUESTS = "model.retrain-requests"
LIFECYCLE = "model.lifecycle"
ENDPOINT_REQUESTS = "serving.requests"

ALL_TOPICS = [SUBMISSIONS, OUTCOMES, SCORES, RETRAIN_REQUESTS, LIFECYCLE, ENDPOINT_REQUESTS]
