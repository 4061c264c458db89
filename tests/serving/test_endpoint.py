"""The REST endpoint against real registered model versions, under a real uvicorn server."""

from __future__ import annotations

import threading
import time

import httpx
import orjson
import pytest

pytestmark = pytest.mark.integration


def test_scores_one_submission_or_a_list_with_the_model_version(serving_config, mlflow_store, api_key, helpers):
    version = helpers.register_version(serving_config)
    helpers.set_alias(serving_config, "production", version)
    batch = [helpers.submission(seed) for seed in range(2, 7)]
    with helpers.running_endpoint(serving_config, request_log=False) as base:
        helpers.wait_for(lambda: helpers.ready_version(base), what="a loaded model")
        one = httpx.post(f"{base}/v1/score", json=helpers.submission(1), headers={"X-API-Key": api_key})
        many = httpx.post(f"{base}/v1/score", json=batch, headers={"Authorization": f"Bearer {api_key}"})
        model = httpx.get(f"{base}/v1/model", headers={"X-API-Key": api_key}).json()
        metrics = httpx.get(f"{base}/metrics", headers={"X-API-Key": api_key}).text

    assert one.status_code == 200, one.text
    body = one.json()
    assert body["model_name"] == serving_config.mlflow.model_name
    assert body["model_version"] == version and body["route"] == "production"
    [prediction] = body["predictions"]
    assert prediction["event_id"] == helpers.submission(1)["event_id"]
    # Exactly what the registered model computes in-process: same features, same trees.
    assert [prediction["progress_score"]] == helpers.expected("first", [helpers.submission(1)])
    assert prediction["comprehension_level"] in ("beginner", "developing", "proficient", "advanced")
    probabilities = prediction["probabilities"]
    assert list(probabilities) == ["beginner", "developing", "proficient", "advanced"]
    assert abs(sum(probabilities.values()) - 1) < 1e-9
    assert prediction["comprehension_level"] == max(probabilities, key=probabilities.get)
    assert (prediction["model_name"], prediction["model_version"]) == (serving_config.mlflow.model_name, version)
    assert one.headers["x-request-id"] == body["request_id"]

    assert many.status_code == 200, many.text
    predictions = many.json()["predictions"]
    assert [p["event_id"] for p in predictions] == [e["event_id"] for e in batch]
    assert [p["progress_score"] for p in predictions] == helpers.expected("first", batch)
    assert model["production"]["version"] == version and model["registry"]["reachable"] is True
    # /metrics: requests by status and version, the latency histogram, what is loaded, the registry.
    assert f'learnscore_serving_requests_total{{model_version="{version}",route="production",status="200"}} 2.0' in metrics
    assert f'learnscore_serving_request_latency_seconds_count{{model_version="{version}"}} 2.0' in metrics
    assert f'learnscore_serving_request_latency_seconds_bucket{{le="+Inf",model_version="{version}"}} 2.0' in metrics
    assert f'learnscore_serving_scored_items_total{{model_version="{version}",route="production"}} 6.0' in metrics
    assert "learnscore_serving_registry_reachable 1.0" in metrics and "learnscore_serving_ready 1.0" in metrics


def test_invalid_submissions_are_refused_with_the_contract_reasons(serving_config, mlflow_store, api_key, helpers):
    helpers.set_alias(serving_config, "production", helpers.register_version(serving_config))
    good = helpers.submission(1)
    bad_subject = {**helpers.submission(2), "subject": "art"}
    no_responses = {key: value for key, value in helpers.submission(3).items() if key != "responses"}
    headers = {"X-API-Key": api_key}
    with helpers.running_endpoint(serving_config, request_log=False) as base:
        helpers.wait_for(lambda: helpers.ready_version(base), what="a loaded model")
        mixed = httpx.post(f"{base}/v1/score", json=[good, bad_subject, no_responses], headers=headers)
        not_json = httpx.post(f"{base}/v1/score", content=b"{not json", headers=headers)
        too_many = httpx.post(f"{base}/v1/score", json=[good] * (serving_config.serving.max_batch + 1),
                              headers=headers)
        empty = httpx.post(f"{base}/v1/score", json=[], headers=headers)

    assert mixed.status_code == 422
    body = mixed.json()
    assert body["error"] == "invalid_event"
    assert [(item["index"], item["reason_code"]) for item in body["items"]] == [
        (1, "unknown_value"), (2, "missing_field")]
    assert body["items"][0]["event_id"] == bad_subject["event_id"]
    assert body["items"][0]["problems"] == [
        {"code": "unknown_value", "path": "subject", "message": "'art' is not one of math, reading, science (the config's domain.subjects: add it there to accept it)"}]
    assert body["items"][1]["problems"][0]["path"] == "responses"
    assert (not_json.status_code, not_json.json()["error"]) == (422, "not_json")
    assert (too_many.status_code, too_many.json()["error"]) == (422, "too_many_items")
    assert (empty.status_code, empty.json()["error"]) == (422, "empty_batch")
    for answer in (mixed, not_json, too_many, empty):
        assert "Traceback" not in answer.text


def test_oversized_bodies_get_413_declared_or_chunked(serving_config, mlflow_store, api_key, helpers):
    config = serving_config.model_copy(update={"serving": serving_config.serving.model_copy(
        update={"max_body_bytes": 4096})})
    helpers.set_alias(config, "production", helpers.register_version(config))
    big = orjson.dumps(helpers.big_submission(1, responses=60))
    assert len(big) > 4096

    def chunks():
        for start in range(0, len(big), 1000):
            yield big[start:start + 1000]

    with helpers.running_endpoint(config, request_log=False) as base:
        helpers.wait_for(lambda: helpers.ready_version(base), what="a loaded model")
        declared = httpx.post(f"{base}/v1/score", content=big, headers={"X-API-Key": api_key})
        chunked = httpx.post(f"{base}/v1/score", content=chunks(), headers={"X-API-Key": api_key})
        small = httpx.post(f"{base}/v1/score", json=helpers.submission(2),
                           headers={"X-API-Key": api_key})

    assert (declared.status_code, declared.json()["error"]) == (413, "body_too_large")
    assert f"{len(big)} bytes" in declared.json()["message"]
    assert (chunked.status_code, chunked.json()["error"]) == (413, "body_too_large")
    assert small.status_code == 200


def test_missing_or_wrong_api_key_gets_401_without_echoing_it(serving_config, mlflow_store, api_key, helpers):
    helpers.set_alias(serving_config, "production", helpers.register_version(serving_config))
    event = helpers.submission(1)
    with helpers.running_endpoint(serving_config, request_log=False) as base:
        helpers.wait_for(lambda: helpers.ready_version(base), what="a loaded model")
        missing = httpx.post(f"{base}/v1/score", json=event)
        wrong = httpx.post(f"{base}/v1/score", json=event, headers={"X-API-Key": api_key + "x"})
        wrong_bearer = httpx.post(f"{base}/v1/score", json=event, headers={"Authorization": "Bearer nope"})
        metrics = httpx.get(f"{base}/metrics", headers={"X-API-Key": api_key}).text

    for answer in (missing, wrong, wrong_bearer):
        assert answer.status_code == 401
        assert answer.json()["error"] == "unauthorised"
        assert answer.headers["www-authenticate"] == "Bearer"
        assert api_key not in answer.text
    assert 'learnscore_serving_requests_total{model_version="none",route="none",status="401"} 3.0' in metrics


def test_no_production_model_gives_503_until_one_appears(serving_config, mlflow_store, api_key, helpers):
    version = helpers.register_version(serving_config)  # registered, but no alias yet
    with helpers.running_endpoint(serving_config, request_log=False) as base:
        helpers.wait_for(lambda: httpx.get(f"{base}/readyz").json()["registry"]["checked_at"],
                         what="a first registry check")
        not_ready = httpx.get(f"{base}/readyz")
        refused = httpx.post(f"{base}/v1/score", json=helpers.submission(1), headers={"X-API-Key": api_key})
        alive = httpx.get(f"{base}/healthz")
        helpers.set_alias(serving_config, "production", version)
        helpers.wait_for(lambda: helpers.ready_version(base), what="the new production model")
        scored = httpx.post(f"{base}/v1/score", json=helpers.submission(1), headers={"X-API-Key": api_key})

    assert alive.status_code == 200
    assert not_ready.status_code == 503
    assert not_ready.json()["model_loaded"] is False and not_ready.json()["registry"]["reachable"] is True
    assert refused.status_code == 503 and refused.json()["error"] == "no_model"
    assert "alias 'production'" in refused.json()["message"]
    assert scored.status_code == 200 and scored.json()["model_version"] == version


def test_hot_swap_under_load_fails_no_request(serving_config, mlflow_store, api_key, helpers):
    first = helpers.register_version(serving_config, "first")
    second = helpers.register_version(serving_config, "second")
    helpers.set_alias(serving_config, "production", first)
    model_of = {first: "first", second: "second"}
    answers: list[tuple[float, float, int, int, dict | None]] = []  # sent, received, index, status, body
    stop = threading.Event()

    def load(base: str, worker: int) -> None:
        with httpx.Client(base_url=base, headers={"X-API-Key": api_key}, timeout=30) as client:
            index = worker * 250
            while not stop.is_set():
                index += 1
                sent = time.monotonic()
                answer = client.post("/v1/score", json=helpers.submission(index))
                answers.append((sent, time.monotonic(), index, answer.status_code,
                                answer.json() if answer.status_code == 200 else None))

    with helpers.running_endpoint(serving_config, request_log=False) as base:
        helpers.wait_for(lambda: helpers.ready_version(base) == first, what="version 1")
        workers = [threading.Thread(target=load, args=(base, n)) for n in range(4)]
        for worker in workers:
            worker.start()
        helpers.wait_for(lambda: len(answers) >= 50, what="load before the swap")
        helpers.set_alias(serving_config, "production", second)
        helpers.wait_for(lambda: helpers.ready_version(base) == second, what="the swap")
        swapped_at = len(answers)
        helpers.wait_for(lambda: len(answers) >= swapped_at + 50, what="load after the swap")
        stop.set()
        for worker in workers:
            worker.join()
        metrics = httpx.get(f"{base}/metrics", headers={"X-API-Key": api_key}).text

    statuses = {status for _, _, _, status, _ in answers}
    assert statuses == {200}, f"failed requests: {sorted(statuses)}"
    versions = [body["model_version"] for *_, body in answers]
    assert versions[0] == first and versions[-1] == second and set(versions) == {first, second}
    # A request sent after a version-2 answer arrived can only have been scored by version 2.
    first_v2_received = min(received for _, received, _, _, body in answers if body["model_version"] == second)
    assert {body["model_version"] for sent, _, _, _, body in answers if sent > first_v2_received} == {second}
    # Each answer was computed by the model its version number names.
    for which in ("first", "second"):
        scored = [(index, body["predictions"][0]["progress_score"]) for _, _, index, _, body in answers
                  if model_of[body["model_version"]] == which]
        assert [score for _, score in scored] == helpers.expected(
            which, [helpers.submission(index) for index, _ in scored]), which
    assert "learnscore_serving_model_swaps_total 2.0" in metrics


def test_canary_share_is_scored_by_staging(serving_config, mlflow_store, api_key, helpers):
    config = serving_config.model_copy(update={"serving": serving_config.serving.model_copy(
        update={"canary_fraction": 0.5})})
    production = helpers.register_version(config, "first")
    staging = helpers.register_version(config, "second")
    helpers.set_alias(config, "production", production)
    helpers.set_alias(config, "staging", staging)
    events = [helpers.submission(seed) for seed in range(60)]
    with helpers.running_endpoint(config, request_log=False) as base:
        helpers.wait_for(lambda: httpx.get(f"{base}/v1/model", headers={"X-API-Key": api_key}).json()["staging"], what="the canary model")
        answers = [httpx.post(f"{base}/v1/score", json=event, headers={"X-API-Key": api_key}).json()
                   for event in events]
    routes = {(answer["route"], answer["model_version"]) for answer in answers}
    assert routes == {("production", production), ("staging", staging)}
    expected = {"production": helpers.expected("first", events), "staging": helpers.expected("second", events)}
    for position, answer in enumerate(answers):
        assert answer["predictions"][0]["progress_score"] == expected[answer["route"]][position]


def test_a_rushed_submission_is_flagged_and_scored_on_its_effortful_answers_too(serving_config, mlflow_store,
                                                                                 api_key, helpers):
    import copy

    version = helpers.register_version(serving_config)
    helpers.set_alias(serving_config, "production", version)
    calm, rushed = copy.deepcopy(helpers.submission(11)), copy.deepcopy(helpers.submission(12))
    for response in calm["responses"]:
        response["response_time_ms"] = max(response["response_time_ms"], 10_000)  # above every threshold
    for position, response in enumerate(rushed["responses"]):
        response["response_time_ms"] = 300 if position % 2 == 0 else max(response["response_time_ms"], 10_000)
    with helpers.running_endpoint(serving_config, request_log=False) as base:
        helpers.wait_for(lambda: helpers.ready_version(base), what="a loaded model")
        answer = httpx.post(f"{base}/v1/score", json=[calm, rushed], headers={"X-API-Key": api_key})

    assert answer.status_code == 200, answer.text
    normal, flagged = answer.json()["predictions"]
    assert (normal["rapid_guess_share"], normal["low_effort"], normal["effort_moderated_score"]) == (0.0, False, None)
    n = len(rushed["responses"])
    assert flagged["rapid_guess_share"] == pytest.approx(((n + 1) // 2) / n) and flagged["low_effort"] is True
    effortful = {**rushed, "responses": rushed["responses"][1::2]}
    assert flagged["effort_moderated_score"] == pytest.approx(helpers.expected("first", [effortful])[0])
    assert flagged["progress_score"] == pytest.approx(helpers.expected("first", [rushed])[0])
