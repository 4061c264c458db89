"""One SCRAM user per process and the least ACLs it needs (``broker.acls``).

The broker runs ``StandardAuthorizer`` with ``allow.everyone.if.no.acl.found=false``: a user may
do only what an ACL below allows. ``learnscore stack up`` creates the users of
``kafka.principals`` (passwords from ``$LEARNSCORE_KAFKA_PASSWORD_<ROLE>``, else made once under
``<state_dir>/secrets``) and their ACLs through the admin API, as ``broker.super_user``. For a
real broker, docs/cluster.md lists the same grants as ``kafka-acls`` commands.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from learnscore.core.config import Config
from learnscore.schemas import topics
from learnscore.stack.kafka_security import MECHANISM, principal_variable, stack_password, super_user_client
from learnscore.stack.processes import StackError

log = logging.getLogger(__name__)

# Spark's Kafka source names its consumer groups "spark-kafka-source-<query uuid>-...".
SPARK_GROUP_PREFIX = "spark-kafka-source-"


@dataclass(frozen=True)
class Access:
    """What one process does on Kafka: topics it reads and writes (base names), its groups."""

    reads: tuple[str, ...] = ()
    writes: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    group_prefixes: tuple[str, ...] = ()


def access_by_role(config: Config) -> dict[str, Access]:
    """The least each process needs, by its role in ``kafka.principals``."""
    return {
        "scorer": Access(
            reads=(topics.SUBMISSIONS, topics.OUTCOMES, topics.ENDPOINT_REQUESTS, topics.SCORES,
                   topics.SCORE_RETRIES, topics.SCORER_PROGRESS, topics.SHADOW_SCORES),
            writes=(topics.SCORES, topics.SCORE_RETRIES, topics.SCORER_PROGRESS, topics.SHADOW_SCORES,
                    topics.RETRAIN_REQUESTS),
            group_prefixes=(SPARK_GROUP_PREFIX,)),
        "endpoint": Access(writes=(topics.ENDPOINT_REQUESTS,)),
        "retrain_worker": Access(reads=(topics.RETRAIN_REQUESTS,),
                                 writes=(topics.RETRAIN_REQUESTS, topics.LIFECYCLE),
                                 groups=(config.retrain.consumer_group,)),
        "producer": Access(writes=(topics.SUBMISSIONS, topics.OUTCOMES)),
    }


def acls_for(config: Config, user: str, access: Access) -> list:
    """kafka-python ACL objects granting ``access`` to ``User:<user>``: READ/WRITE and DESCRIBE
    on each deployed topic it uses, READ on its consumer groups."""
    from kafka.admin import ACL, ACLOperation, ACLPermissionType, ACLResourcePatternType, ResourcePattern, ResourceType

    def grant(operation, resource_type, name, pattern=ACLResourcePatternType.LITERAL):
        return ACL(f"User:{user}", "*", operation, ACLPermissionType.ALLOW,
                   ResourcePattern(resource_type, name, pattern))

    grants = []
    for base_name in dict.fromkeys((*access.reads, *access.writes)):
        grants.append(grant(ACLOperation.DESCRIBE, ResourceType.TOPIC, config.topic(base_name)))
    grants += [grant(ACLOperation.READ, ResourceType.TOPIC, config.topic(name)) for name in access.reads]
    grants += [grant(ACLOperation.WRITE, ResourceType.TOPIC, config.topic(name)) for name in access.writes]
    grants += [grant(ACLOperation.READ, ResourceType.GROUP, group) for group in access.groups]
    grants += [grant(ACLOperation.READ, ResourceType.GROUP, prefix, ACLResourcePatternType.PREFIXED)
               for prefix in access.group_prefixes]
    return grants


def ensure_principals(config: Config) -> dict[str, str]:
    """Create (or update) each process's SCRAM user on the local broker and grant its ACLs.

    Returns role -> user. Idempotent: an existing ACL is not duplicated, a user's password is set
    again from its variable or file.
    """
    from kafka.admin import UserScramCredentialUpsertion

    from learnscore.core.kafka_io import admin_client

    client, secrets = super_user_client(config)
    users = config.kafka.principals.model_dump()
    admin = admin_client(client, secrets)
    try:
        errors = admin.alter_user_scram_credentials([
            UserScramCredentialUpsertion(user, MECHANISM, stack_password(config, principal_variable(role)))
            for role, user in users.items()])
        failed = {user: error for user, error in errors.items() if error}
        if failed:
            raise StackError(f"the broker refused to create Kafka users: {failed}")
        grants = [acl for role, access in access_by_role(config).items()
                  for acl in acls_for(config, users[role], access)]
        result = admin.create_acls(grants)
        if result.get("failed"):
            raise StackError(f"the broker refused ACLs: {result['failed']}")
    finally:
        admin.close()
    log.info("kafka users %s with their ACLs", ", ".join(users.values()))
    return users
