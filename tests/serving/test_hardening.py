"""The endpoint's defences, under a real uvicorn server: key length, what needs the key, rate
limits, refusals that cannot crowd the request log, non-finite outputs, TLS.
"""

from __future__ import annotations

import copy
import datetime
import ipaddress
import os
import re
import ssl
import threading

import httpx
import numpy as np
import pytest

from learnscore.core.config import ConfigError, Secrets, load_config
from learnscore.core.ports import free_port

pytestmark = pytest.mark.integration

SHORT_KEY = "k" * 31


def _metric(text: str, name: str, labels: str = "") -> float:
    pattern = re.escape(name + (f"{{{labels}}}" if labels else "")) + r" (\S+)"
    found = re.search(f"^{pattern}$", text, re.MULTILINE)
    if found is None:
        raise AssertionError(f"{name}{{{labels}}} not in /metrics")
    return float(found.group(1))


def test_an_api_key_shorter_than_32_characters_is_refused_at_start(base_config):
    from learnscore.serving.app import create_app

    short = Secrets(base_config, environ={Secrets.API_KEY: SHORT_KEY})
    with pytest.raises(ConfigError, match="LEARNSCORE_API_KEY is 31 characters long; the endpoint needs at "
                                          "least 32 .*secrets.token_urlsafe"):
        create_app(base_config, short, request_log=False)
    assert Secrets(base_config, environ={Secrets.API_KEY: SHORT_KEY + "k"}).api_key.get_secret_value() == SHORT_KEY + "k"


def test_only_the_probes_answer_without_the_key_and_they_name_no_version(serving_config, mlflow_store, api_key,
                                                                          helpers):
    version = helpers.register_version(serving_config)
    helpers.set_alias(serving_config, "production", version)
    with helpers.running_endpoint(serving_config, request_log=False, wait_ready=True) as base, \
            httpx.Client(base_url=base, timeout=30) as client:
        open_answers = {path: client.get(path) for path in ("/healthz", "/readyz")}
        closed = {path: client.get(path) for path in ("/metrics", "/v1/model")}
        wrong = client.get("/metrics", headers={"X-API-Key": api_key[:-1] + "x"})
        with_key = {path: client.get(path, headers={"Authorization": f"Bearer {api_key}"})
                    for path in ("/metrics", "/v1/model")}

    assert {path: answer.status_code for path, answer in open_answers.items()} == {"/healthz": 200, "/readyz": 200}
    ready = open_answers["/readyz"].json()
    assert (ready["status"], ready["model_loaded"], ready["registry"]["reachable"]) == ("ready", True, True)
    assert sorted(ready) == ["model_loaded", "reason", "registry", "status"] and sorted(ready["registry"]) == [
        "checked_at", "reachable"]
    assert serving_config.mlflow.model_name not in open_answers["/readyz"].text
    for answer in (*closed.values(), wrong):
        assert answer.status_code == 401 and answer.json()["error"] == "unauthorised"
        assert answer.headers["www-authenticate"] == "Bearer"
        assert serving_config.mlflow.model_name not in answer.text and "learnscore_serving" not in answer.text
    assert with_key["/v1/model"].json()["production"]["version"] == version
    metrics = with_key["/metrics"].text
    assert _metric(metrics, "learnscore_serving_unauthorised_total", 'path="/metrics"') == 2
    assert _metric(metrics, "learnscore_serving_unauthorised_total", 'path="/v1/model"') == 1


def test_each_client_is_rate_limited_and_wrong_keys_have_their_own_bucket(serving_config, mlflow_store, api_key,
                                                                          helpers):
    config = serving_config.model_copy(update={"serving": serving_config.serving.model_copy(update={
        "rate_limit_per_second": 0.2, "rate_limit_burst": 3,
        "unauthenticated_rate_per_second": 0.2, "unauthenticated_burst": 2})})
    helpers.set_alias(config, "production", helpers.register_version(config))
    event = helpers.submission(1)
    with helpers.running_endpoint(config, request_log=False, wait_ready=True) as base, \
            httpx.Client(base_url=base, timeout=30) as client:
        bad = [client.post("/v1/score", json=event, headers={"X-API-Key": "wrong"}) for _ in range(5)]
        good = [client.post("/v1/score", json=event, headers={"X-API-Key": api_key}) for _ in range(4)]
        probes = [client.get("/healthz").status_code, client.get("/readyz").status_code]
        # The bucket refills at 0.2/s: one request more after Retry-After.
        wait_s = int(good[-1].headers["retry-after"])
        threading.Event().wait(wait_s + 0.2)
        metrics = client.get("/metrics", headers={"X-API-Key": api_key}).text

    assert [a.status_code for a in bad] == [401, 401, 429, 429, 429]
    assert [a.status_code for a in good] == [200, 200, 200, 429]  # the flood of bad keys took none of these
    assert probes == [200, 200]  # never limited
    limited = good[-1]
    assert limited.json()["error"] == "rate_limited" and "serving.rate_limit_per_second" in limited.json()["message"]
    assert 1 <= wait_s <= 5 and limited.headers["x-request-id"] == limited.json()["request_id"]
    assert "for requests without the right API key" in bad[-1].json()["message"]
    assert _metric(metrics, "learnscore_serving_rate_limited_total", 'authenticated="false"') == 3
    assert _metric(metrics, "learnscore_serving_rate_limited_total", 'authenticated="true"') == 1
    assert _metric(metrics, "learnscore_serving_requests_total",
                   'model_version="none",route="none",status="429"') == 4


def test_a_flood_of_wrong_keys_takes_one_percent_of_the_request_log(serving_config, mlflow_store, api_key, helpers):
    """The broker is away, so every record stays in the bounded queue: a flood of 401s with the
    default share fills a sliver of it and the real requests keep their place; with every
    refusal logged, the same flood pushes them out."""
    dead = f"127.0.0.1:{free_port()}"
    helpers.set_alias(serving_config, "production", helpers.register_version(serving_config))

    def flood(share: float) -> str:
        config = serving_config.model_copy(update={
            "kafka": serving_config.kafka.model_copy(update={"bootstrap_servers": dead}),
            "serving": serving_config.serving.model_copy(update={
                "port": free_port(), "request_log_capacity": 20, "refusal_log_share": share,
                "unauthenticated_rate_per_second": 0})})
        with helpers.running_endpoint(config, wait_ready=True) as base, \
                httpx.Client(base_url=base, timeout=30) as client:
            refused = [client.post("/v1/score", json=helpers.submission(1), headers={"X-API-Key": "nope"}).status_code
                       for _ in range(250)]
            scored = [client.post("/v1/score", json=helpers.submission(i), headers={"X-API-Key": api_key}).status_code
                      for i in range(5)]
            assert (set(refused), scored) == ({401}, [200] * 5)
            return client.get("/metrics", headers={"X-API-Key": api_key}).text

    sampled = flood(0.01)
    assert _metric(sampled, "learnscore_serving_requests_total", 'model_version="none",route="none",status="401"') == 250
    assert _metric(sampled, "learnscore_serving_refusals_not_logged_total", 'status="401"') == 247  # 3 logged
    assert _metric(sampled, "learnscore_serving_request_log_queued") == 3 + 5
    assert _metric(sampled, "learnscore_serving_request_log_dropped_total") == 0

    everything = flood(1.0)
    assert _metric(everything, "learnscore_serving_request_log_queued") == 20
    assert _metric(everything, "learnscore_serving_request_log_dropped_total") == 250 + 5 - 20


def _nan_scoring(model):
    """A copy of ``model`` whose score model answers NaN: loads fine, predicts garbage."""
    broken = copy.deepcopy(model)
    regressor = broken.score_pipeline_[-1]
    regressor._baseline_prediction = np.full_like(regressor._baseline_prediction, np.nan)
    return broken


def test_a_non_finite_model_output_is_a_503_never_a_200_with_null(serving_config, mlflow_store, api_key, helpers,
                                                                  fitted_model, small_history_events):
    import mlflow

    from learnscore.core.tracking import use_mlflow
    from learnscore.model.features import model_input_from_events
    from learnscore.model.packaging import log_diagnostic_model

    use_mlflow(serving_config)
    with mlflow.start_run(run_name="nan-model"):
        uri = log_diagnostic_model(_nan_scoring(fitted_model), model_input_from_events(small_history_events[0][:3]))
    version = str(mlflow.register_model(uri, serving_config.mlflow.model_name).version)
    helpers.set_alias(serving_config, "production", version)
    headers = {"X-API-Key": api_key}
    with helpers.running_endpoint(serving_config, request_log=False, wait_ready=True) as base, \
            httpx.Client(base_url=base, headers=headers, timeout=30) as client:
        one = client.post("/v1/score", json=helpers.submission(1))
        many = client.post("/v1/score", json=[helpers.submission(i) for i in range(3)])
        metrics = client.get("/metrics").text

    for answer in (one, many):
        assert answer.status_code == 503, answer.text
        body = answer.json()
        assert body["error"] == "unusable_output" and "predictions" not in body
        assert f"model version {version} returned no usable prediction" in body["message"]
        assert "null" not in answer.text
    assert _metric(metrics, "learnscore_serving_unusable_outputs_total", f'model_version="{version}"') == 2
    assert _metric(metrics, "learnscore_serving_requests_total",
                   f'model_version="{version}",route="production",status="503"') == 2


# -- TLS ---------------------------------------------------------------------------------------------


def _self_signed(folder, password: bytes):
    """A self-signed certificate for 127.0.0.1 and its key, encrypted with ``password``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=5))
                   .not_valid_after(now + datetime.timedelta(days=1))
                   .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                               x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                                  critical=False)
                   .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                   .sign(key, hashes.SHA256()))
    cert, key_file = folder / "endpoint.pem", folder / "endpoint-key.pem"
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    descriptor = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.BestAvailableEncryption(password)))
    return cert, key_file


def test_with_tls_the_endpoint_speaks_https_only_and_tls_is_required_off_loopback(base_config, tmp_path):
    import uvicorn

    from learnscore.serving.app import create_app
    from learnscore.serving.server import server_config, tls_options

    password = "tls-key-password-for-the-test"
    cert, key = _self_signed(tmp_path, password.encode())
    config = base_config.model_copy(update={"serving": base_config.serving.model_copy(update={
        "tls_certfile": cert, "tls_keyfile": key, "port": free_port()})})
    secrets = Secrets(config, environ={**os.environ, Secrets.TLS_KEY_PASSWORD: password})
    settings = server_config(config, create_app(config, secrets, request_log=False), host="127.0.0.1",
                             port=config.serving.port, secrets=secrets)
    server = uvicorn.Server(settings)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    trusted = ssl.create_default_context(cafile=str(cert))
    try:
        for _ in range(200):
            if server.started or not thread.is_alive():
                break
            threading.Event().wait(0.05)
        assert server.started
        base = f"127.0.0.1:{config.serving.port}"
        assert httpx.get(f"https://{base}/healthz", verify=trusted).status_code == 200
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://{base}/healthz", timeout=5)  # plain HTTP is not answered
        old = ssl.create_default_context(cafile=str(cert))
        old.minimum_version = old.maximum_version = ssl.TLSVersion.TLSv1_1
        old.set_ciphers("ALL:@SECLEVEL=0")
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"https://{base}/healthz", verify=old, timeout=5)  # TLS 1.1 refused
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"https://{base}/healthz", timeout=5)  # an untrusted certificate is not accepted
    finally:
        server.should_exit = True
        thread.join(timeout=30)

    with pytest.raises(ConfigError, match="cannot use the TLS certificate .* is LEARNSCORE_TLS_KEY_PASSWORD right"):
        tls_options(config, Secrets(config, environ={Secrets.TLS_KEY_PASSWORD: "wrong"}), "127.0.0.1")
    with pytest.raises(ConfigError, match="export its password as LEARNSCORE_TLS_KEY_PASSWORD"):
        tls_options(config, Secrets(config, environ={}), "127.0.0.1")
    # An address other machines reach: TLS or nothing, from the config and from `serve --host`.
    with pytest.raises(ConfigError, match="serving.host is 0.0.0.0, reachable from other machines, but TLS is off"):
        load_config("local", environ={"LEARNSCORE__SERVING__HOST": "0.0.0.0"}, base_dir=tmp_path)
    with pytest.raises(ConfigError, match="refusing to serve plain HTTP on 0.0.0.0"):
        tls_options(base_config, Secrets(base_config, environ={}), "0.0.0.0")
    cluster = load_config("cluster", environ={}, base_dir=tmp_path)
    assert cluster.serving.host == "0.0.0.0" and cluster.serving.tls
