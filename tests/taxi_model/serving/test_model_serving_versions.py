"""Versions: swaps under load, labels from models.config, and what in the serving root is not a version."""

from __future__ import annotations

import json
import logging
import shutil
import socket
import subprocess
import sys
import threading
import time

import pytest
from serving_test_support import publish_version, running_server, wait_for, write_models_config

from taxi_model.serving.client import GrpcClient, RestClient, ServingRequestError
from taxi_model.serving.errors import ConfigError, ServingError
from taxi_model.serving.repository import CONFIG_FILE, ModelConfig, wanted_versions
from taxi_model.serving.server import ModelServer, ServerOptions


def states(server, model: str = "taxi") -> dict[int, str]:
    client = RestClient(port=server.rest_port)
    try:
        return dict(client.status(model))
    finally:
        client.close()


def test_a_new_version_takes_over_without_a_failed_request(trained_model, tmp_path, examples):
    publish_version(trained_model["model"], tmp_path / "taxi", 1)
    failures: list[str] = []
    versions_per_client: list[list[int]] = [[] for _ in range(2)]
    rest_answers = [0, 0]
    stop = threading.Event()

    def ask_grpc(port: int, seen: list[int]) -> None:
        client = GrpcClient(port=port, timeout=10)
        while not stop.is_set():
            try:
                seen.append(client.predict(examples[:5]).version)
            except Exception as e:
                failures.append(f"gRPC: {e!r}")
        client.close()

    def ask_rest(port: int, index: int) -> None:
        client = RestClient(port=port, timeout=10)
        while not stop.is_set():
            try:
                assert len(client.predict(examples[:5]).probabilities) == 5
                rest_answers[index] += 1
            except Exception as e:
                failures.append(f"REST: {e!r}")
        client.close()

    with running_server(tmp_path, poll_seconds=0.2) as server:
        threads = [threading.Thread(target=ask_grpc, args=(server.grpc_port, seen)) for seen in versions_per_client]
        threads += [threading.Thread(target=ask_rest, args=(server.rest_port, i)) for i in range(2)]
        for thread in threads:
            thread.start()
        try:
            time.sleep(0.5)
            publish_version(trained_model["model"], tmp_path / "taxi", 2)
            wait_for(lambda: states(server) == {2: "AVAILABLE", 1: "END"}, "version 2 replaces version 1")
            time.sleep(0.5)
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=20)

    assert not failures
    assert min(rest_answers) > 0
    for seen in versions_per_client:
        assert seen[0] == 1 and seen[-1] == 2
        assert seen == sorted(seen)  # once version 2 answered, version 1 never did again


def test_labels_route_to_their_versions_and_follow_models_config(trained_model, tmp_path, examples, caplog):
    base = tmp_path / "taxi"
    for version in (1, 2):
        publish_version(trained_model["model"], base, version)
    write_models_config(tmp_path, "taxi", [1, 2], {"stable": 1, "canary": 2})

    with running_server(tmp_path) as server:
        grpc_client, rest = GrpcClient(port=server.grpc_port), RestClient(port=server.rest_port)
        assert grpc_client.predict(examples, label="stable").version == 1
        assert grpc_client.predict(examples, label="canary").version == 2
        assert grpc_client.predict(examples).version == 2  # no label: the newest
        assert rest.status("taxi", label="stable") == [(1, "AVAILABLE")]
        assert rest.predict(examples, label="stable").probabilities == rest.predict(examples, version=1).probabilities

        write_models_config(tmp_path, "taxi", [2], {"stable": 2})  # promote version 2; version 1 goes
        wait_for(lambda: states(server) == {2: "AVAILABLE", 1: "END"}, "version 1 unloaded")
        assert grpc_client.predict(examples, label="stable").version == 2
        with pytest.raises(ServingRequestError, match="Unrecognized servable version label: canary"):
            rest.predict(examples, label="canary")

        # A broken models.config on a poll: logged, and the last good one stays (as TF-Serving does).
        with caplog.at_level(logging.ERROR, logger="taxi_model.serving"):
            (tmp_path / CONFIG_FILE).write_text("model_config_list { config { name: ")
            wait_for(lambda: "ignoring the new models.config" in caplog.text, "the broken config logged")
        assert grpc_client.predict(examples, label="stable").version == 2
        assert states(server) == {2: "AVAILABLE", 1: "END"}
        grpc_client.close()
        rest.close()


def policy_config(policy: str) -> str:
    return f'model_config_list {{ config {{ name: "taxi" base_path: "taxi" model_version_policy {{ {policy} }} }} }}'


def test_a_specific_version_policy_serves_exactly_its_versions(trained_model, tmp_path, examples):
    for version in (123, 124):
        publish_version(trained_model["model"], tmp_path / "taxi", version)
    (tmp_path / CONFIG_FILE).write_text(policy_config("specific { versions: 123 }"))

    with running_server(tmp_path) as server:
        rest, grpc_client = RestClient(port=server.rest_port), GrpcClient(port=server.grpc_port)
        assert states(server) == {123: "AVAILABLE"}  # 124, the newest on disk, is not loaded
        assert grpc_client.predict(examples).version == 123  # "latest" is the newest served
        assert rest.request("GET", "/v1/models/taxi/metadata")[1]["model_spec"]["version"] == "123"
        with pytest.raises(ServingRequestError, match=r"Servable not found for request: Specific\(taxi, 124\)"):
            rest.predict(examples, version=124)
        rest.close()
        grpc_client.close()


@pytest.mark.parametrize(
    "policy, wanted",
    [
        (ModelConfig("taxi"), {4}),  # no policy: the newest
        (ModelConfig("taxi", latest=2), {3, 4}),
        (ModelConfig("taxi", all_versions=True), {1, 3, 4}),
        (ModelConfig("taxi", specific=frozenset({1, 2})), {1}),  # only those on disk
        (ModelConfig("taxi", specific=frozenset({3}), labels={"stable": 1}), {3}),  # labels load nothing
    ],
)
def test_version_policies_want_what_tf_serving_loads(policy, wanted):
    assert wanted_versions({1, 3, 4}, policy) == wanted


def test_a_broken_models_config_stops_the_start(tmp_path):
    (tmp_path / CONFIG_FILE).write_text(policy_config("specific { versions: 1 }").replace("}", "", 1))
    with pytest.raises(ConfigError, match="Invalid protobuf file: .*models.config"):
        ModelServer(ServerOptions(serving_root=str(tmp_path), rest_port=0, grpc_port=0)).start()

    started = subprocess.run(
        [
            sys.executable,
            "-m",
            "taxi_model.serving.server",
            "--serving_root",
            str(tmp_path),
            "--rest_port",
            "0",
            "--grpc_port",
            "0",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert started.returncode == 1
    assert "Failed to start server. Error: Invalid protobuf file:" in started.stderr
    assert "Expected" in started.stderr.splitlines()[-1]  # the parser's own words, on the last line


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_the_ports_answer_only_once_the_models_are_loaded(trained_model, tmp_path):
    publish_version(trained_model["model"], tmp_path / "taxi", 1)
    port = free_port()
    server = ModelServer(ServerOptions(serving_root=str(tmp_path), rest_port=port, grpc_port=0))
    starting = threading.Thread(target=server.start)
    starting.start()
    answers, refused = [], 0
    try:
        while starting.is_alive():  # every answer during the start is a ready server's
            client = RestClient(port=port, timeout=10)
            try:
                answers.append(client.request("GET", "/v1/models/taxi"))
            except ConnectionRefusedError:
                refused += 1
            client.close()
            time.sleep(0.01)
        starting.join()
        answers.append(RestClient(port=port).request("GET", "/v1/models/taxi"))
    finally:
        server.stop()
    assert refused > 0  # the load took a while, and the port refused meanwhile
    assert all(
        status == 200 and [s["state"] for s in answer["model_version_status"]] == ["AVAILABLE"]
        for status, answer in answers
    )


def loaded_states(server, model: str = "taxi") -> dict[int, str]:
    """The repository's states of `model` now, without asking the server's ports."""
    try:
        return {version: state.state for version, state in server.repository.version_states(model)}
    except ServingError:
        return {}


def test_the_grpc_port_answers_only_once_the_models_are_loaded(trained_model, tmp_path):
    """TF-Serving binds gRPC after the load: no connection succeeds before the models are AVAILABLE."""
    publish_version(trained_model["model"], tmp_path / "taxi", 1)
    port = free_port()
    server = ModelServer(ServerOptions(serving_root=str(tmp_path), rest_port=0, grpc_port=port))
    starting = threading.Thread(target=server.start)
    starting.start()
    answers, refused, states_at_connect = [], 0, []
    try:
        while starting.is_alive():  # every connection during the start is to a ready server
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=10):
                    states_at_connect.append(loaded_states(server))
            except ConnectionRefusedError:
                refused += 1
                time.sleep(0.01)
                continue
            client = GrpcClient(port=port, timeout=10)
            answers.append(client.status("taxi"))
            client.close()
        starting.join()
        client = GrpcClient(port=port, timeout=10)
        answers.append(client.status("taxi"))
        client.close()
    finally:
        server.stop()
    assert refused > 0  # the load took a while, and the port refused meanwhile
    assert all(states == {1: "AVAILABLE"} for states in states_at_connect)
    assert all(answer == [(1, "AVAILABLE")] for answer in answers)


def test_a_taken_grpc_port_fails_the_start_at_once_and_frees_the_rest_port(trained_model, tmp_path):
    publish_version(trained_model["model"], tmp_path / "taxi", 1)
    rest_port = free_port()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        server = ModelServer(
            ServerOptions(serving_root=str(tmp_path), rest_port=rest_port, grpc_port=taken.getsockname()[1])
        )
        threads = set(threading.enumerate())
        with pytest.raises(OSError, match="cannot bind gRPC"):
            server.start()
    with pytest.raises(ServingError, match="Could not find any versions of model taxi"):
        server.repository.version_states("taxi")  # failed before loading anything
    assert set(threading.enumerate()) <= threads  # no thread left behind
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", rest_port))  # the REST port is free again


def test_poll_seconds_0_reads_the_serving_root_once(trained_model, tmp_path):
    publish_version(trained_model["model"], tmp_path / "taxi", 1)
    with running_server(tmp_path, poll_seconds=0) as server:
        assert "serving-root-poller" not in {thread.name for thread in threading.enumerate()}
        publish_version(trained_model["model"], tmp_path / "taxi", 2)
        time.sleep(0.5)
        assert states(server) == {1: "AVAILABLE"}


def test_only_version_directories_count_and_a_bad_version_breaks_nothing(trained_model, tmp_path, examples):
    base = tmp_path / "taxi"
    publish_version(trained_model["model"], base, 1)
    shutil.copytree(trained_model["model"], base / ".3.staging-abc")  # a push in progress
    (base / "records").mkdir()
    (base / "records" / "1.json").write_text(json.dumps({"run_id": "x"}))
    (base / "labels.json").write_text("{}")
    (tmp_path / ".taxi_new").mkdir()  # a model being set up

    with running_server(tmp_path) as server:
        client = GrpcClient(port=server.grpc_port)
        assert states(server) == {1: "AVAILABLE"}
        with pytest.raises(ServingRequestError, match="Could not find any versions of model .taxi_new"):
            states(server, ".taxi_new")

        # A newest version that cannot load: reported, and version 1 keeps serving.
        (base / "5").mkdir()
        (base / "5" / "saved_model.pb").write_bytes(b"not a SavedModel")
        wait_for(lambda: states(server).get(5) == "END", "version 5 failed")
        status = RestClient(port=server.rest_port).request("GET", "/v1/models/taxi/versions/5")[1]
        assert status["model_version_status"][0]["status"]["error_code"] != "OK"
        assert client.predict(examples).version == 1

        # It vanishes (moved away by rename) and a good version 6 arrives: 6 takes over.
        (base / "5").rename(base / ".5.trash")
        publish_version(trained_model["model"], base, 6)
        wait_for(lambda: states(server) == {6: "AVAILABLE", 5: "END", 1: "END"}, "version 6 replaces version 1")

        # Version 6 replaced in place by renames (the deployment's retry of a window): reloaded from
        # the new directory, and serving goes on meanwhile.
        first_copy = server.repository.resolve("taxi", 6)
        (base / "6").rename(base / ".6.old")
        time.sleep(0.3)  # polls that find no version 6 on disk (fewer than VANISHED_POLLS)
        assert client.predict(examples).version == 6
        publish_version(trained_model["model"], base, 6)
        shutil.rmtree(base / ".6.old")
        wait_for(lambda: server.repository.resolve("taxi", 6) is not first_copy, "version 6 reloaded")
        assert client.predict(examples).version == 6
        assert states(server) == {6: "AVAILABLE", 5: "END", 1: "END"}

        # Version 6 deleted for good (a rollback): version 1 is back.
        shutil.rmtree(base / "6")
        wait_for(lambda: states(server) == {6: "END", 5: "END", 1: "AVAILABLE"}, "version 1 replaces version 6")
        assert client.predict(examples).version == 1
        client.close()
