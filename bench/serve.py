"""``learnscore bench serve``: latency at a steady request rate, then the most requests per second.

The endpoint runs as its own process (``learnscore serve``) on loopback, scoring the registry's
``production`` model. Latency is measured open-loop: each request has a scheduled send time
and its latency counts from then, so a slow answer cannot hide the requests queued behind it.
Throughput uses ``wrk`` when installed (light on CPU), otherwise httpx with a fixed number of
connections; both are bounded in time.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson

from learnscore.core.config import Config, Secrets
from learnscore.core.ports import free_port
from learnscore.core.waiting import WaitTimedOut, wait_until

log = logging.getLogger(__name__)

# Relative to the folder the benchmark runs in (never inside the installed package).
RESULTS = Path("bench/results/serve.json")


def bench_submissions(count: int, seed: int = 11) -> list[dict[str, Any]]:
    """``count`` simulated DiagnosticSubmitted events (the platform's item bank), all in the past."""
    from datetime import timedelta

    from learnscore.simulator.generator import Simulator

    start = datetime.now(timezone.utc) - timedelta(seconds=count + 3600)
    return Simulator(seed=seed, start=start, interval_s=1.0, run="bench-serve").take(count).submissions


def percentiles_ms(latencies_s: list[float]) -> dict[str, float]:
    """p50/p95/p99 in milliseconds, rounded to 0.01.

    >>> percentiles_ms([0.001] * 99 + [0.1])["p50_ms"]
    1.0
    """
    values = np.asarray(latencies_s) * 1000
    return {f"p{q}_ms": round(float(np.percentile(values, q)), 2) for q in (50, 95, 99)}


class _KeepAliveConnections:
    """A few HTTP/1.1 keep-alive connections that POST prebuilt bodies: a load generator light
    enough (tens of microseconds per request) that its own cost does not show in the latencies.

    Speaks only what the endpoint answers: a status line, headers with Content-Length, a body.
    """

    def __init__(self, url: str, api_key: str, size: int):
        parsed = httpx.URL(url)
        self.host, self.port, self.path = parsed.host, parsed.port or 80, parsed.raw_path.decode()
        self.head = (f"POST {self.path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                     f"X-API-Key: {api_key}\r\nContent-Type: application/json\r\n").encode()
        self.size = size
        self._idle: asyncio.Queue = asyncio.Queue()

    async def open(self) -> None:
        for _ in range(self.size):
            self._idle.put_nowait(await asyncio.open_connection(self.host, self.port))

    async def post(self, body: bytes) -> int:
        """Send one request on an idle connection (waiting for one if all are busy); its status."""
        reader, writer = await self._idle.get()
        try:
            writer.write(self.head + b"Content-Length: %d\r\n\r\n" % len(body) + body)
            header = await reader.readuntil(b"\r\n\r\n")
            length = int(re.search(rb"(?i)content-length:\s*(\d+)", header).group(1))
            await reader.readexactly(length)
        except BaseException:
            writer.close()
            self._idle.put_nowait(await asyncio.open_connection(self.host, self.port))
            raise
        self._idle.put_nowait((reader, writer))
        return int(header[9:12])

    async def close(self) -> None:
        while not self._idle.empty():
            _, writer = self._idle.get_nowait()
            writer.close()


async def steady_rate(url: str, api_key: str, bodies: list[bytes], rate: float, seconds: float,
                      connections: int = 16) -> dict[str, Any]:
    """Send single-submission requests at ``rate`` per second for ``seconds``; open-loop latencies.

    Each request has a scheduled send time and its latency counts from then, so a slow answer
    cannot hide the requests queued behind it (no coordinated omission).
    """
    total = int(rate * seconds)
    latencies: list[float] = []
    failures: dict[str, int] = {}
    pool = _KeepAliveConnections(url, api_key, connections)
    await pool.open()
    start = time.perf_counter() + 0.05

    async def one(index: int) -> None:
        scheduled = start + index / rate
        await asyncio.sleep(max(0.0, scheduled - time.perf_counter()))
        try:
            outcome = str(await asyncio.wait_for(pool.post(bodies[index % len(bodies)]), timeout=10))
        except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError, AttributeError) as exc:
            outcome = type(exc).__name__
        if outcome == "200":
            latencies.append(time.perf_counter() - scheduled)
        else:
            failures[outcome] = failures.get(outcome, 0) + 1

    try:
        await asyncio.gather(*(one(index) for index in range(total)))
    finally:
        await pool.close()
    elapsed = time.perf_counter() - start
    return {"requests": total, "ok": len(latencies), "failures": failures,
            "achieved_rps": round(len(latencies) / elapsed, 1), **percentiles_ms(latencies or [0.0])}


def _wrk_max_rps(url: str, api_key: str, body: bytes, connections: int, seconds: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as folder:
        script = Path(folder) / "post.lua"
        script.write_text(
            'wrk.method = "POST"\n'
            f"wrk.body = {json.dumps(body.decode())}\n"
            'wrk.headers["Content-Type"] = "application/json"\n'
            f'wrk.headers["X-API-Key"] = "{api_key}"\n')
        answer = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{int(seconds)}s", "--latency",
                                 "-s", str(script), url], capture_output=True, text=True,
                                timeout=seconds + 60)
    if answer.returncode != 0:
        raise RuntimeError(f"wrk failed: {answer.stderr.strip()[:500]}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", answer.stdout).group(1))
    errors = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", answer.stdout)
    socket_errors = re.search(r"Socket errors: (.*)", answer.stdout)
    return {"max_rps": round(rps, 1), "max_rps_non_2xx": int(errors.group(1)) if errors else 0,
            "max_rps_socket_errors": socket_errors.group(1) if socket_errors else None,
            "load_generator": "wrk -t1"}


async def _httpx_max_rps(url: str, api_key: str, bodies: list[bytes], connections: int,
                         seconds: float) -> dict[str, Any]:
    done = 0
    failed = 0
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    async with httpx.AsyncClient(limits=limits, timeout=10,
                                 headers={"X-API-Key": api_key, "Content-Type": "application/json"}) as client:
        deadline = time.perf_counter() + seconds

        async def worker(offset: int) -> None:
            nonlocal done, failed
            index = offset
            while time.perf_counter() < deadline:
                answer = await client.post(url, content=bodies[index % len(bodies)])
                index += connections
                if answer.status_code == 200:
                    done += 1
                else:
                    failed += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker(n) for n in range(connections)))
        elapsed = time.perf_counter() - started
    return {"max_rps": round(done / elapsed, 1), "max_rps_non_2xx": failed,
            "load_generator": f"httpx ({connections} connections)"}


def _start_endpoint(config: Config, port: int, log_file: Path) -> subprocess.Popen:
    # The benchmark measures capacity from one client: the per-client rate limit is off.
    env = {**os.environ, "LEARNSCORE__SERVING__PORT": str(port), "LEARNSCORE__SERVING__RATE_LIMIT_PER_SECOND": "0",
           "MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "false"}
    with open(log_file, "ab") as out:
        return subprocess.Popen([sys.executable, "-m", "learnscore", "--env", config.env, "serve",
                                 "--port", str(port)], stdout=out, stderr=subprocess.STDOUT,
                                env=env, start_new_session=True)


def _wait_ready(base: str, process: subprocess.Popen, log_file: Path, api_key: str,
                timeout_s: float = 180) -> str:
    def alive() -> None:
        if process.poll() is not None:
            raise RuntimeError(f"the endpoint exited during start-up; see {log_file}")

    def version() -> str | None:
        # /readyz says ready or not to anyone; the version is told only to holders of the key.
        try:
            if httpx.get(f"{base}/readyz", timeout=2).status_code != 200:
                return None
            answer = httpx.get(f"{base}/v1/model", headers={"X-API-Key": api_key}, timeout=2)
        except httpx.HTTPError:
            return None
        return answer.json()["production"]["version"] if answer.status_code == 200 else None

    try:
        return wait_until(version, timeout_s, "the endpoint", interval_s=0.5, check=alive)
    except WaitTimedOut:
        raise RuntimeError(f"the endpoint was not ready within {timeout_s:.0f}s (is there a 'production' "
                           f"model of {log_file.name}? see {log_file})") from None


def load_average() -> dict[str, float]:
    """The machine's 1, 5 and 15 minute load averages (shared machines: read figures with it)."""
    one, five, fifteen = os.getloadavg()
    return {"1m": round(one, 2), "5m": round(five, 2), "15m": round(fifteen, 2)}


def wait_for_quiet(max_load: float, timeout_s: float) -> dict[str, float]:
    """Wait (up to ``timeout_s``) until the 1-minute load average is at most ``max_load``."""
    def quiet() -> bool:
        load = os.getloadavg()[0]
        if load > max_load:
            log.info("load average %.2f is above %.2f; waiting for a quieter machine", load, max_load)
        return load <= max_load

    try:
        wait_until(quiet, timeout_s, "a quieter machine", interval_s=15)
    except WaitTimedOut:
        pass  # measure anyway: the figures carry the load average they were taken under
    return load_average()


def _run(coroutine):
    """Run the load generator on uvloop when installed (less of its own overhead in the figures)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coroutine)
    return uvloop.run(coroutine)


def run_serve_benchmark(config: Config, rate: float = 100.0, seconds: float = 20.0,
                        connections: int = 32, results: Path = RESULTS,
                        max_load: float | None = None, max_wait_s: float = 600.0) -> dict[str, Any]:
    """Measure the endpoint and write ``bench/results/serve.json``; return the figures.

    With ``max_load``, first wait (up to ``max_wait_s``) for the machine's 1-minute load
    average to fall to it; the load averages during each phase are recorded either way.
    """
    from learnscore.serving.server import fastest_loop_and_parser

    api_key = Secrets(config).api_key.get_secret_value()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    results.parent.mkdir(parents=True, exist_ok=True)
    log_file = config.state_dir / "bench-serve.log"
    log_file.parent.mkdir(parents=True, exist_ok=True)
    bodies = [orjson.dumps(event) for event in bench_submissions(2000)]
    if max_load is not None:
        wait_for_quiet(max_load, max_wait_s)
    loads: dict[str, dict[str, float]] = {}
    process = _start_endpoint(config, port, log_file)
    try:
        version = _wait_ready(base, process, log_file, api_key)
        log.info("endpoint ready with version %s; warming up", version)
        _run(steady_rate(f"{base}/v1/score", api_key, bodies, rate=50, seconds=3))
        loads["steady_start"] = load_average()
        log.info("steady %g requests/s for %gs (load average %s)", rate, seconds, loads["steady_start"])
        steady = _run(steady_rate(f"{base}/v1/score", api_key, bodies, rate, seconds))
        loads["steady_end"] = load_average()
        log.info("steady: %s", steady)
        log.info("max throughput with %d connections for %gs", connections, seconds)
        if shutil.which("wrk"):
            peak = _wrk_max_rps(f"{base}/v1/score", api_key, bodies[0], connections, seconds)
        else:
            peak = _run(_httpx_max_rps(f"{base}/v1/score", api_key, bodies, connections, seconds))
        loads["peak_end"] = load_average()
        log.info("peak: %s", peak)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    loop, http = fastest_loop_and_parser()
    figures = {
        "p50_ms": steady["p50_ms"], "p95_ms": steady["p95_ms"], "p99_ms": steady["p99_ms"],
        "rate_rps": rate, "achieved_rps": steady["achieved_rps"], "requests": steady["requests"],
        "failures": steady["failures"], **peak, "connections": connections, "seconds": seconds,
        "load_average": loads, "load_average_1m": loads["steady_start"]["1m"],
        "model_name": config.mlflow.model_name, "model_version": version,
        "server": f"uvicorn 1 worker, loop {loop}, http {http}", "cpu_count": os.cpu_count(),
        "latency_client": "open-loop, keep-alive raw HTTP/1.1 (serving/bench.py), single submissions",
        "targets": {"p99_ms_at_100_rps": 25, "max_rps": 500},
        "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["learnscore", *sys.argv[1:]]),
    }
    results.write_text(json.dumps(figures, indent=2) + "\n")
    figures["written_to"] = str(results)
    return figures
