"""Starting the endpoint and the dashboard on a port that is taken: a clear error, no traceback."""

import socket

import pytest

from learnscore.core.ports import PortTaken
from learnscore.monitoring.server import run_dashboard
from learnscore.serving.server import run_server


@pytest.mark.parametrize("start, setting", [(run_server, "LEARNSCORE__SERVING__PORT"),
                                            (run_dashboard, "LEARNSCORE__DASHBOARD__PORT")])
def test_a_taken_port_is_named_with_the_fix(base_config, start, setting):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(PortTaken, match=f"port {port} on 127.0.0.1 is already taken by .*{setting}"):
            start(base_config, host="127.0.0.1", port=port)
