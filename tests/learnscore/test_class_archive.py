"""The Spark driver's class archive: its name follows the JDK, PySpark and jar set; absent, unused."""

from learnscore.core import class_archive
from learnscore.core.config import load_config


def _config(tmp_path):
    jars = tmp_path / "jars" / "spark"
    jars.mkdir(parents=True)
    (jars / "delta-spark_2.13-4.0.0.jar").write_bytes(b"")
    return load_config(environ={"LEARNSCORE__SPARK__JARS_DIR": str(jars),
                                "LEARNSCORE__STATE_DIR": str(tmp_path / "state")})


def test_a_new_jar_set_names_a_new_archive_and_a_missing_archive_adds_no_option(tmp_path):
    config = _config(tmp_path)
    first = class_archive.archive_path(config)
    assert first is not None and first.parent == (tmp_path / "jars" / "cds").resolve()
    assert class_archive.java_options(config) == ""
    (tmp_path / "jars" / "spark" / "delta-spark_2.13-4.1.0.jar").write_bytes(b"")
    second = class_archive.archive_path(config)
    assert second != first
    second.parent.mkdir(parents=True)
    second.write_bytes(b"archive")
    assert class_archive.java_options(config) == f"-XX:SharedArchiveFile={second}"


def test_spark_class_archive_false_never_maps_it(tmp_path):
    config = _config(tmp_path)
    path = class_archive.archive_path(config)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"archive")
    off = config.model_copy(update={"spark": config.spark.model_copy(update={"class_archive": False})})
    assert class_archive.java_options(off) == ""
