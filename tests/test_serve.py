"""``gpmask serve``: a real Triton server on loopback, loaded by concurrent clients.

The server is the tritonserver binary of the nvidia-pytriton wheel; these tests skip,
with the reason, where it is not installed. Every request loop is bounded in count
and time, and every server is stopped by the test that started it.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from gpmask.errors import GpmaskError


def _skip_reason() -> str | None:
    try:
        from gpmask.serve.server import find_triton

        find_triton()
        import tritonclient.grpc  # noqa: F401
        import tritonclient.http  # noqa: F401
    except (GpmaskError, ImportError) as exc:
        return f"Triton cannot start here: {exc}"
    return None


pytestmark = pytest.mark.skipif(_skip_reason() is not None, reason=_skip_reason() or "")

MAX_SIZE = (160, 200)
SIZES = [(48, 64), (30, 50), (96, 96)]


def _endpoints():
    from gpmask.serve.server import Endpoints, free_port

    return Endpoints(http_port=free_port(), grpc_port=free_port(), metrics_port=free_port())


@pytest.fixture(scope="module")
def server(demo_bundle: Path):
    from gpmask.serve.config import Batching
    from gpmask.serve.triton import ServeSettings, serve_bundle

    settings = ServeSettings(max_size=MAX_SIZE, instances=2,
                             batching=Batching(max_batch=8, queue_delay_us=2000))
    with serve_bundle(demo_bundle, settings, _endpoints(), timeout_s=120) as running:
        yield running


@pytest.fixture(scope="module")
def restorer(demo_bundle: Path):
    from gpmask.runtime import Restorer

    with Restorer(demo_bundle) as loaded:
        yield loaded


@pytest.fixture(scope="module")
def router(demo_bundle: Path):
    from gpmask.bundle import Bundle
    from gpmask.runtime.routing import ClassifierRouter

    return ClassifierRouter.from_bundle(Bundle.open(demo_bundle))


def _client(server, protocol: str):
    import tritonclient.grpc as grpc
    import tritonclient.http as http

    if protocol == "http":
        return http, http.InferenceServerClient(server.endpoints.http_url, network_timeout=60)
    return grpc, grpc.InferenceServerClient(server.endpoints.grpc_url)


def _infer(server, frames: np.ndarray, weather: str | None = None, protocol: str = "http",
           datatype: str = "UINT8") -> tuple[np.ndarray, list[str]]:
    module, client = _client(server, protocol)
    image = module.InferInput("image", list(frames.shape), datatype)
    image.set_data_from_numpy(frames)
    result = client.infer(
        "gpmask", [image], parameters={"weather": weather} if weather else None,
        outputs=[module.InferRequestedOutput("restored"),
                 module.InferRequestedOutput("weather", class_count=1)])
    labels = [entry.decode().split(":")[2] for entry in result.as_numpy("weather").ravel()]
    return result.as_numpy("restored"), labels


def test_concurrent_clients_get_what_the_restorer_gives(server, restorer, router) -> None:
    """4 clients (2 HTTP, 2 gRPC) at once, every weather, common, clear, auto and the
    default, frames of three sizes; each answer equals the Restorer's on the same frames
    with the weather the server reports, and auto chose what the router chooses."""
    rng = np.random.default_rng(0)
    asked = [*restorer.weathers, "common", "clear", "auto", None]
    jobs = []
    for client in range(4):
        for index, weather in enumerate(asked):
            height, width = SIZES[(client + index) % len(SIZES)]
            frames = rng.integers(0, 256, (1 + index % 2, height, width, 3), dtype=np.uint8)
            jobs.append((client, weather, frames))

    def work(client: int) -> list:
        protocol = "http" if client % 2 == 0 else "grpc"
        return [(weather, frames, *_infer(server, frames, weather, protocol))
                for owner, weather, frames in jobs if owner == client]

    started = time.monotonic()
    with ThreadPoolExecutor(4) as pool:
        answers = [a for result in pool.map(work, range(4)) for a in result]
    assert time.monotonic() - started < 120
    assert len(answers) == len(jobs) == 4 * len(asked)
    for weather, frames, restored, labels in answers:
        assert restored.shape == frames.shape and restored.dtype == np.uint8
        for frame, out, label in zip(frames, restored, labels, strict=True):
            if weather in (None, "auto"):  # the demo bundle has a router: auto is default
                assert label == router.classify(np.ascontiguousarray(frame[:, :, ::-1]))
            else:
                assert label == weather
            expected = frame if label == "clear" else restorer.restore(frame, label)
            difference = np.abs(out.astype(int) - expected.astype(int))
            # frames batched with others' may round differently in float, never by more
            # than one level
            assert difference.max() <= 1 and difference.mean() < 0.05, (weather, label)
    assert {label for *_, labels in answers for label in labels} >= {
        *restorer.weathers, "common", "clear"}


@pytest.mark.parametrize("frames, datatype, weather, message", [
    (np.zeros((1, 32, 32, 3), np.float32), "FP32", None,
     "inference input 'image' data-type is 'FP32', but model 'gpmask' expects 'UINT8'"),
    (np.zeros((1, 32, 32, 4), np.uint8), "UINT8", None, "unexpected shape for input 'image'"),
    (np.zeros((1, 32, 32), np.uint8), "UINT8", None, "unexpected shape for input 'image'"),
    (np.zeros((1, 1, 40, 3), np.uint8), "UINT8", None, "frame size 1x40 is too small"),
    (np.zeros((1, 240, 200, 3), np.uint8), "UINT8", None,
     "frame size 240x200 is larger than this server's maximum 160x200"),
    (np.zeros((1, 32, 32, 3), np.uint8), "UINT8", "fog",
     "weather 'fog' is not one of rain, raindrop, snow, common, clear, auto"),
])
def test_a_bad_request_gets_a_clear_error_and_the_server_keeps_serving(
        server, restorer, frames, datatype, weather, message) -> None:
    from tritonclient.utils import InferenceServerException

    for protocol in ("http", "grpc"):
        with pytest.raises(InferenceServerException) as caught:
            _infer(server, frames, weather, protocol, datatype)
        assert message in str(caught.value), (protocol, str(caught.value))
    good = np.full((1, 32, 32, 3), 120, np.uint8)
    restored, labels = _infer(server, good, "snow")
    assert labels == ["snow"]
    assert np.abs(restored[0].astype(int) - restorer.restore(good[0], "snow")).max() <= 1


def test_bad_and_good_requests_batched_together_are_answered_each_on_its_own(
        server, restorer) -> None:
    from tritonclient.utils import InferenceServerException

    good = np.random.default_rng(1).integers(0, 256, (1, 48, 64, 3), dtype=np.uint8)

    def one(kind: int):
        try:
            return _infer(server, good, "fog" if kind % 2 else "rain")
        except InferenceServerException as exc:
            return str(exc)

    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(one, range(12)))
    expected = restorer.restore(good[0], "rain")
    for kind, result in enumerate(results):
        if kind % 2:
            assert "weather 'fog' is not one of" in result
        else:
            assert result[1] == ["rain"]
            assert np.abs(result[0][0].astype(int) - expected.astype(int)).max() <= 1


_HALF_SENT = """
import socket, sys, time
sock = socket.create_connection(("127.0.0.1", {port}))
body = b'{{"inputs":[{{"name":"image","shape":[1,64,64,3],"datatype":"UINT8","data":['
sock.sendall(b"POST /v2/models/gpmask/infer HTTP/1.1\\r\\nHost: x\\r\\nContent-Type: "
             b"application/json\\r\\nContent-Length: 100000\\r\\n\\r\\n" + body)
print("sent", flush=True)
time.sleep(60)
"""

_NOT_READ = """
import numpy as np, tritonclient.http as http
client = http.InferenceServerClient("{url}")
frames = np.zeros((1, 160, 200, 3), np.uint8)
image = http.InferInput("image", list(frames.shape), "UINT8")
image.set_data_from_numpy(frames)
print("sent", flush=True)
client.infer("gpmask", [image])
"""


@pytest.mark.parametrize("script", [_HALF_SENT, _NOT_READ], ids=["mid-upload", "mid-answer"])
def test_a_client_killed_mid_request_leaves_the_server_healthy(server, script) -> None:
    code = script.format(port=server.endpoints.http_port, url=server.endpoints.http_url)
    client = subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert client.stdout.readline().strip() == "sent"
        time.sleep(0.05)
    finally:
        client.kill()
        client.wait(10)
    assert server.running()
    url = f"http://{server.endpoints.http_url}/v2/health/ready"
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200
    restored, labels = _infer(server, np.full((1, 32, 32, 3), 60, np.uint8), "rain")
    assert restored.shape == (1, 32, 32, 3) and labels == ["rain"]


def test_metrics_count_the_requests(server) -> None:
    _infer(server, np.full((1, 32, 32, 3), 90, np.uint8), "snow")
    with urllib.request.urlopen(server.endpoints.metrics_url, timeout=10) as response:
        text = response.read().decode()
    counts = [float(line.split()[-1]) for line in text.splitlines()
              if line.startswith('nv_inference_request_success{model="gpmask"')]
    assert counts and counts[0] >= 1


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
def test_the_command_serves_until_a_signal_stops_it_cleanly(demo_bundle, tmp_path, stop):
    endpoints = _endpoints()
    log = tmp_path / "triton.log"
    command = [sys.executable, "-m", "gpmask.cli", "serve", str(demo_bundle), "--weather",
               "snow", "--http-port", str(endpoints.http_port), "--grpc-port",
               str(endpoints.grpc_port), "--metrics-port", str(endpoints.metrics_port),
               "--log", str(log)]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, process.stderr.read()
            assert time.monotonic() < deadline
            try:
                urllib.request.urlopen(f"http://{endpoints.http_url}/v2/health/ready", timeout=1)
                break
            except OSError:
                time.sleep(0.3)

        class Running:  # what _infer needs of a server
            pass

        running = Running()
        running.endpoints = endpoints
        restored, labels = _infer(running, np.full((1, 32, 32, 3), 30, np.uint8))
        assert labels == ["snow"] and restored.shape == (1, 32, 32, 3)
        process.send_signal(stop)
        _, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, err
    assert f"{stop.name} received, stopping" in err and err.rstrip().endswith("stopped")
    assert "serving" in err and "default weather snow" in err
    with pytest.raises(OSError):  # the server is gone with it
        socket.create_connection(("127.0.0.1", endpoints.http_port), timeout=2).close()
    assert "successfully loaded 'gpmask'" in log.read_text()


@pytest.mark.parametrize("argv, message", [
    (["--weather", "fog"], "--weather 'fog': not one of rain, raindrop, snow, common, clear, auto"),
    (["--instances", "0"], "--instances must be at least 1, got 0"),
    (["--max-batch", "0"], "--max-batch must be at least 1, got 0"),
    (["--http-port", "7000", "--grpc-port", "7000"], "must differ"),
    (["--precision", "int8"], "has no int8"),
])
def test_bad_serve_options_end_in_one_line(demo_bundle, capsys, argv, message) -> None:
    from gpmask.cli import main

    assert main(["serve", str(demo_bundle), *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("gpmask: error: ") and message in err, err


def test_a_port_in_use_is_one_error_line(demo_bundle, capsys) -> None:
    from gpmask.cli import main

    endpoints = _endpoints()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", endpoints.http_port))
        taken.listen()
        code = main(["serve", str(demo_bundle), "--weather", "rain", "--http-port",
                     str(endpoints.http_port), "--grpc-port", str(endpoints.grpc_port),
                     "--metrics-port", str(endpoints.metrics_port)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("gpmask: error:") == 1, err
    assert "Triton Inference Server stopped while starting" in err
    assert "already in use" in err.lower() or "address in use" in err.lower(), err


def test_the_client_example_restores_an_image_file(server, restorer, tmp_path) -> None:
    frame = np.random.default_rng(5).integers(0, 256, (40, 56, 3), dtype=np.uint8)
    cv2 = pytest.importorskip("cv2")
    cv2.imwrite(str(tmp_path / "in.png"), frame[:, :, ::-1])
    example = Path(__file__).resolve().parent.parent / "examples" / "triton_client.py"
    for address in (["--url", server.endpoints.http_url], ["--grpc", server.endpoints.grpc_url]):
        done = subprocess.run([sys.executable, str(example), str(tmp_path / "in.png"), "-o",
                               str(tmp_path / "out.png"), "--weather", "raindrop", *address],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert "restored as raindrop" in done.stdout
        out = cv2.imread(str(tmp_path / "out.png"))[:, :, ::-1]
        assert np.abs(out.astype(int) - restorer.restore(frame, "raindrop")).max() <= 1
