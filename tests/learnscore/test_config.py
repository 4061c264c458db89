import pytest

from learnscore.core.config import ConfigError, Secrets, load_config


def test_local_config_loads_with_absolute_paths(tmp_path):
    config = load_config("local", environ={}, base_dir=tmp_path)
    assert config.env == "local"
    assert config.state_dir == tmp_path / ".state"
    assert config.table_path("gold.predictions") == f"{tmp_path}/.state/lake/gold/predictions"
    assert config.mlflow.tracking_uri == f"sqlite:///{tmp_path}/.state/mlflow/mlflow.db"
    assert config.spark.jars_dir.is_absolute()


def test_environment_overrides_keep_types(tmp_path):
    config = load_config("local", base_dir=tmp_path, environ={
        "LEARNSCORE__KAFKA__BOOTSTRAP_SERVERS": "broker:9094",
        "LEARNSCORE__KAFKA__PARTITIONS": "6",
        "LEARNSCORE__SERVING__CANARY_FRACTION": "0.25",
    })
    assert config.kafka.bootstrap_servers == "broker:9094"
    assert config.kafka.partitions == 6
    assert config.serving.canary_fraction == 0.25


def test_cluster_example_is_valid(tmp_path):
    config = load_config("cluster", environ={}, base_dir=tmp_path)
    assert config.spark.master.startswith("spark://")
    assert config.kafka.security_protocol == "SASL_SSL"
    assert config.table_path("gold.predictions").startswith("s3a://")


def test_invalid_value_names_the_key_and_the_fix(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config("local", base_dir=tmp_path, environ={"LEARNSCORE__KAFKA__PARTITIONS": "zero"})
    message = str(info.value)
    assert "kafka.partitions" in message and "'zero'" in message and "LEARNSCORE__" in message


def test_unknown_key_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="kafka.bootstrap_server"):
        load_config("local", base_dir=tmp_path, environ={"LEARNSCORE__KAFKA__BOOTSTRAP_SERVER": "x"})


def test_unknown_environment_lists_the_known_ones(tmp_path):
    with pytest.raises(ConfigError, match="known: cluster, local"):
        load_config("staging", environ={}, base_dir=tmp_path)


def test_secrets_come_from_the_environment_only(tmp_path):
    local = load_config("local", environ={}, base_dir=tmp_path)
    key = Secrets(local, environ={}).pseudonym_key.get_secret_value()
    assert len(key) >= 32
    assert Secrets(local, environ={}).pseudonym_key.get_secret_value() == key  # stable
    assert (local.state_dir / "secrets" / "learnscore_pseudonym_key").stat().st_mode & 0o077 == 0
    cluster = load_config("cluster", environ={}, base_dir=tmp_path)
    with pytest.raises(ConfigError, match="LEARNSCORE_PSEUDONYM_KEY is not set"):
        _ = Secrets(cluster, environ={}).pseudonym_key
    with pytest.raises(ConfigError, match="LEARNSCORE_KAFKA_PASSWORD is not set"):
        _ = Secrets(cluster, environ={}).kafka_password
    assert "hunter2" not in repr(Secrets(cluster, environ={"LEARNSCORE_KAFKA_PASSWORD": "hunter2"}).kafka_password)


def test_the_mlflow_server_we_start_stays_on_loopback():
    # It speaks plain HTTP: a login from another machine would cross the network in clear text.
    from learnscore.core.config import MlflowConfig

    with pytest.raises(ValueError, match="mlflow.ui_host is 0.0.0.0, reachable from other machines"):
        MlflowConfig(ui_host="0.0.0.0")
    assert MlflowConfig(ui_host="127.0.0.1").ui_host == "127.0.0.1"


def test_the_mlflow_server_asks_for_a_login_in_every_profile_but_local(tmp_path):
    assert not load_config("local", environ={}, base_dir=tmp_path).mlflow_ui_login
    assert load_config("cluster", environ={}, base_dir=tmp_path).mlflow_ui_login
    assert load_config("local", environ={"LEARNSCORE__MLFLOW__UI_LOGIN": "true"}, base_dir=tmp_path).mlflow_ui_login
    cluster = load_config("cluster", environ={}, base_dir=tmp_path)
    with pytest.raises(ConfigError, match="LEARNSCORE_MLFLOW_ADMIN_PASSWORD is not set"):
        _ = Secrets(cluster, environ={}).mlflow_admin_password
    with pytest.raises(ConfigError, match="at least 32"):
        _ = Secrets(cluster, environ={"LEARNSCORE_MLFLOW_ADMIN_PASSWORD": "short"}).mlflow_admin_password


def test_topic_replication_comes_from_the_profile(tmp_path):
    local = load_config("local", environ={}, base_dir=tmp_path)
    assert (local.kafka.replication_factor, local.kafka.min_insync_replicas) == (1, 1)
    assert local.broker.auto_create_topics is True
    cluster = load_config("cluster", environ={}, base_dir=tmp_path)
    assert (cluster.kafka.replication_factor, cluster.kafka.min_insync_replicas) == (3, 2)


def test_more_insync_replicas_than_replicas_is_refused(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config("local", base_dir=tmp_path, environ={"LEARNSCORE__KAFKA__MIN_INSYNC_REPLICAS": "2"})
    assert "kafka.min_insync_replicas (2) exceeds kafka.replication_factor (1)" in str(info.value)


def test_secure_profile_is_sasl_ssl_only_with_acls_and_no_auto_creation(tmp_path):
    config = load_config("secure", environ={}, base_dir=tmp_path)
    assert config.kafka.security_protocol == "SASL_SSL"
    assert (config.broker.plaintext_listener, config.broker.acls, config.broker.auto_create_topics) == (
        False, True, False)
    assert config.mlflow_ui_login is True


def test_cluster_extends_secure_and_keeps_its_own_values(tmp_path):
    config = load_config("cluster", environ={}, base_dir=tmp_path)
    assert config.broker.acls is True and config.broker.auto_create_topics is False  # from secure.yaml
    assert config.kafka.bootstrap_servers.startswith("kafka-1.internal")           # its own
    assert config.mlflow.ui_login is True


def _profiles(folder, **files):
    folder.mkdir()
    (folder / "base.yaml").write_text("kafka:\n  partitions: 2\n  topic_prefix: base.\n")
    for name, text in files.items():
        (folder / f"{name}.yaml").write_text(text)
    return folder


def test_extends_layers_base_then_parent_then_profile_then_environment(tmp_path):
    conf = _profiles(tmp_path / "conf",
                     parent="kafka:\n  partitions: 3\n  topic_prefix: parent.\n  request_timeout_s: 9\n",
                     child="extends: parent\nkafka:\n  partitions: 4\n")
    config = load_config("child", conf_dir=conf, base_dir=tmp_path,
                         environ={"LEARNSCORE__KAFKA__TOPIC_PREFIX": "env."})
    assert (config.kafka.partitions, config.kafka.request_timeout_s, config.kafka.topic_prefix) == (4, 9, "env.")
    assert config.env == "child"


def test_an_extends_cycle_is_refused_with_the_chain(tmp_path):
    conf = _profiles(tmp_path / "conf", a="extends: b\n", b="extends: c\n", c="extends: a\n")
    with pytest.raises(ConfigError) as info:
        load_config("a", conf_dir=conf, base_dir=tmp_path, environ={})
    assert "a -> b -> c -> a" in str(info.value)


def test_extending_a_missing_profile_names_it(tmp_path):
    conf = _profiles(tmp_path / "conf", child="extends: nowhere\n")
    with pytest.raises(ConfigError) as info:
        load_config("child", conf_dir=conf, base_dir=tmp_path, environ={})
    assert "extends 'nowhere'" in str(info.value) and "no nowhere.yaml" in str(info.value)


def test_acls_without_closing_the_plaintext_listener_are_refused(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config("local", base_dir=tmp_path, environ={"LEARNSCORE__BROKER__ACLS": "true"})
    assert "broker.acls needs every client to log in" in str(info.value)


def test_each_command_logs_in_to_kafka_as_its_own_user_in_the_secure_profile(tmp_path):
    secure = load_config("secure", environ={}, base_dir=tmp_path)
    assert secure.kafka.sasl_username is None
    scorer = secure.as_kafka_role("scorer")
    assert scorer.kafka.sasl_username == secure.kafka.principals.scorer == "learnscore-scorer"
    assert load_config("local", environ={}, base_dir=tmp_path).as_kafka_role("scorer").kafka.sasl_username is None
    named = load_config("secure", environ={"LEARNSCORE__KAFKA__SASL_USERNAME": "ops"}, base_dir=tmp_path)
    assert named.as_kafka_role("scorer").kafka.sasl_username == "ops"  # an operator's choice stands

    # Its password: the role's variable, else the one `stack up` made for the local broker's user.
    assert Secrets(scorer, environ={"LEARNSCORE_KAFKA_PASSWORD_SCORER": "s3"}).kafka_password.get_secret_value() == "s3"
    with pytest.raises(ConfigError, match="LEARNSCORE_KAFKA_PASSWORD is not set"):
        _ = Secrets(scorer, environ={}).kafka_password
    made = scorer.state_dir / "secrets" / "learnscore_kafka_password_scorer"
    made.parent.mkdir(parents=True)
    made.write_text("made-by-stack-up\n")
    assert Secrets(scorer, environ={}).kafka_password.get_secret_value() == "made-by-stack-up"
    assert Secrets(scorer, environ={"LEARNSCORE_KAFKA_PASSWORD": "x"}).kafka_password.get_secret_value() == "x"
