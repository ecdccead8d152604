"""The deployment files under deploy/ agree with the code.

Every YAML parses; the configuration they ship (the images' coordinator.yaml and
worker.yaml, the Kubernetes ConfigMaps) validates against `dtf_common.config` with the
environment each container is given; Services, probes and volumes match the configured
ports and data directory; the high-availability StatefulSet is an odd-sized Raft cluster
whose peers resolve through its headless Service and whose certificates, made and put
into a Secret by the commands of docs/deployment.md, are the files each pod is configured
to load; the Dockerfiles copy files that exist, into the layout the coordinator's Alembic
lookup expects.
"""

from __future__ import annotations

import re
import shlex
import urllib.parse
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from dtf.cli.main import main as dtf_main
from dtf_common import tls
from dtf_common.config import CoordinatorConfig, WorkerConfig, load_config, parse_config
from dtf_common.errors import ConfigError
from dtf_coordinator.store import migrate
from dtf_worker.client import parse_target

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "kubernetes"
DEPLOYMENT_DOC = ROOT / "docs" / "deployment.md"
YAML_FILES = sorted(p for p in DEPLOY.rglob("*") if p.suffix in (".yaml", ".yml"))
DOCKERFILES = sorted(p for p in DEPLOY.glob("Dockerfile.*") if p.suffix != ".dockerignore")

SIGNING_SECRET = "test-signing-secret-0123456789abcdef"
WORKER_TOKEN = "test-worker-token"
SECRET_VALUES = {"jwt-secret": SIGNING_SECRET, "worker-token": WORKER_TOKEN}
MODELS: dict[str, type[CoordinatorConfig] | type[WorkerConfig]] = {
    "coordinator.yaml": CoordinatorConfig,
    "worker.yaml": WorkerConfig,
}


def documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def k8s_objects() -> list[dict[str, Any]]:
    return [doc for path in sorted(K8S.glob("*.yaml")) for doc in documents(path)]


def find(kind: str, name: str) -> dict[str, Any]:
    matches = [o for o in k8s_objects() if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind} {name} under deploy/kubernetes, found {len(matches)}"
    return matches[0]


def workloads() -> list[dict[str, Any]]:
    return [o for o in k8s_objects() if o["kind"] in ("Deployment", "StatefulSet")]


def config_arg(args: list[str]) -> str:
    return args[args.index("--config") + 1]


# ---------------------------------------------------------------- every file


def test_deploy_has_yaml_files() -> None:
    names = {p.relative_to(DEPLOY).as_posix() for p in YAML_FILES}
    assert {"docker-compose.yaml", "config/coordinator.yaml", "config/worker.yaml"} <= names
    for required in (
        "coordinator-deployment.yaml",
        "coordinator-service.yaml",
        "worker-deployment.yaml",
        "configmap.yaml",
        "secret-template.yaml",
        "ha-coordinator-statefulset.yaml",
        "ha-coordinator-headless-service.yaml",
        "ha-coordinator-service.yaml",
        "ha-worker-deployment.yaml",
    ):
        assert f"kubernetes/{required}" in names


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: p.relative_to(DEPLOY).as_posix())
def test_every_yaml_parses(path: Path) -> None:
    docs = documents(path)
    assert docs and all(isinstance(doc, dict) for doc in docs)
    if path.parent == K8S:
        for doc in docs:
            assert {"apiVersion", "kind", "metadata"} <= doc.keys(), path.name


# ---------------------------------------------------------------- the images' configuration


def test_image_coordinator_config_validates_and_needs_a_secret() -> None:
    path = DEPLOY / "config" / "coordinator.yaml"
    config = load_config(CoordinatorConfig, path, env={"JWT_SECRET": SIGNING_SECRET})
    config.check_secret()
    assert config.server.data_dir == "/app/data"
    assert PurePosixPath(config.database.path).parent == PurePosixPath(config.server.data_dir)
    assert (config.server.port, config.server.workers_port, config.server.dashboard_port) == (8080, 8081, 8082)
    with pytest.raises(ConfigError, match="jwt_secret"):
        load_config(CoordinatorConfig, path, env={}).check_secret()


def test_image_worker_config_reads_the_docker_run_variables() -> None:
    path = DEPLOY / "config" / "worker.yaml"
    owner_example = {"WORKER_ID": "worker-1", "COORDINATOR_URL": "http://coordinator:8081", "WORKER_API_KEY": "t"}
    config = load_config(WorkerConfig, path, env=owner_example)
    assert (config.worker.id, config.coordinator.url, config.coordinator.api_key) == (
        "worker-1",
        "http://coordinator:8081",
        "t",
    )
    overridden = load_config(
        WorkerConfig,
        path,
        env={**owner_example, "DTF_WORKER__ID": "worker-9", "DTF_COORDINATOR__URL": "http://elsewhere:9091"},
    )
    assert (overridden.worker.id, overridden.coordinator.url) == ("worker-9", "http://elsewhere:9091")
    defaults = load_config(WorkerConfig, path, env={"WORKER_API_KEY": "t"})
    assert not defaults.worker.id  # generated and remembered in working_dir
    assert defaults.coordinator.url == "http://coordinator:8081"
    assert PurePosixPath(defaults.execution.working_dir).is_relative_to("/app/data")


# ---------------------------------------------------------------- Kubernetes


def container_env(workload: dict[str, Any], container: dict[str, Any], pod: str | None = None) -> dict[str, str]:
    """The container's environment with Secret and field references resolved to test values;
    the pod's name is `pod`, or the workload's first pod."""
    env: dict[str, str] = {}
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = str(var["value"])
            continue
        source = var["valueFrom"]
        if "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            secret = find("Secret", ref["name"])
            assert ref["key"] in secret["stringData"], f"{ref['name']} has no key {ref['key']}"
            env[var["name"]] = SECRET_VALUES[ref["key"]]
        else:
            assert source["fieldRef"]["fieldPath"] == "metadata.name"
            env[var["name"]] = pod or f"{workload['metadata']['name']}-0"
    return env


def mounted_config(workload: dict[str, Any], container: dict[str, Any], path: str) -> tuple[str, str]:
    """(ConfigMap name, key) that the container sees at `path`."""
    directory, filename = str(PurePosixPath(path).parent), PurePosixPath(path).name
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == directory)
    volume = next(v for v in workload["spec"]["template"]["spec"]["volumes"] if v["name"] == mount["name"])
    items = {item["path"]: item["key"] for item in volume["configMap"].get("items", [])}
    return volume["configMap"]["name"], items.get(filename, filename) if items else filename


def data_volume(workload: dict[str, Any], container: dict[str, Any], mount_path: str) -> dict[str, Any]:
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == mount_path)
    for volume in workload["spec"]["template"]["spec"].get("volumes", []):
        if volume["name"] == mount["name"]:
            return dict(volume)
    claims = workload["spec"].get("volumeClaimTemplates", [])
    template = next(c for c in claims if c["metadata"]["name"] == mount["name"])
    return {"volumeClaimTemplate": template}


WORKLOADS = [(w["kind"], w["metadata"]["name"]) for w in workloads()]


@pytest.mark.parametrize(("kind", "name"), WORKLOADS, ids=[n for _, n in WORKLOADS])
def test_workload_config_validates_with_its_environment(kind: str, name: str) -> None:
    workload = find(kind, name)
    (container,) = workload["spec"]["template"]["spec"]["containers"]
    path = config_arg(container["args"])
    configmap_name, key = mounted_config(workload, container, path)
    text = find("ConfigMap", configmap_name)["data"][key]
    env = container_env(workload, container)
    config = parse_config(MODELS[key], yaml.safe_load(text), env=env)
    pod = workload["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True

    if isinstance(config, CoordinatorConfig):
        config.check_secret()
        assert container["image"].startswith("dtf-coordinator")
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert (ports["api"], ports["worker-api"]) == (config.server.port, config.server.workers_port)
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert container[probe]["httpGet"] == {"path": "/health", "port": config.server.port}, probe
        volume = data_volume(workload, container, config.server.data_dir)
        assert "persistentVolumeClaim" in volume or "volumeClaimTemplate" in volume
        if "persistentVolumeClaim" in volume:
            find("PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"])
        assert PurePosixPath(config.database.path).is_relative_to(config.server.data_dir)
        if kind == "Deployment":
            # a cluster of one: a second pod would be a second, independent coordinator
            assert not config.high_availability.enabled
            assert workload["spec"]["replicas"] == 1
            assert workload["spec"]["strategy"]["type"] == "Recreate"
        if kind == "StatefulSet":
            assert config.high_availability.enabled
            assert config.high_availability.coordinator_id == f"{name}-0"
            find("Service", workload["spec"]["serviceName"])
    else:
        assert container["image"].startswith("dtf-worker")
        assert config.coordinator.api_key == WORKER_TOKEN
        assert config.worker.id == f"{name}-0"
        match = re.fullmatch(r"http://([a-z0-9-]+):(\d+)", config.coordinator.url)
        assert match, config.coordinator.url
        host, port = match.groups()
        service = find("Service", host)
        coordinators = [w for w in workloads() if w["spec"]["selector"]["matchLabels"] == service["spec"]["selector"]]
        assert coordinators, f"service {host} selects no coordinator"
        target = next(p["targetPort"] for p in service["spec"]["ports"] if p["port"] == int(port))
        assert target == "worker-api"
        assert data_volume(workload, container, "/app/data")
        assert PurePosixPath(config.execution.working_dir).is_relative_to("/app/data")


def test_every_configmap_file_is_used() -> None:
    used = set()
    for workload in workloads():
        for container in workload["spec"]["template"]["spec"]["containers"]:
            used.add(mounted_config(workload, container, config_arg(container["args"])))
    shipped = {(o["metadata"]["name"], key) for o in k8s_objects() if o["kind"] == "ConfigMap" for key in o["data"]}
    assert shipped == used


def test_secret_template_cannot_be_used_as_it_is() -> None:
    template = find("Secret", "dtf-secrets")["stringData"]
    config = parse_config(
        CoordinatorConfig,
        yaml.safe_load(find("ConfigMap", "dtf-config")["data"]["coordinator.yaml"]),
        env={"JWT_SECRET": template["jwt-secret"]},
    )
    with pytest.raises(ConfigError, match="jwt_secret"):
        config.check_secret()


def test_services_expose_the_coordinator_ports() -> None:
    for service in (o for o in k8s_objects() if o["kind"] == "Service"):
        ports = {p["name"]: (p["port"], p["targetPort"]) for p in service["spec"]["ports"]}
        assert ports["api"] == (8080, "api") and ports["worker-api"] == (8081, "worker-api")
    assert find("Service", "dtf-ha-coordinator-headless")["spec"]["clusterIP"] == "None"


# ---------------------------------------------------------------- high availability

HA_COORDINATORS = "dtf-ha-coordinator"
HA_WORKERS = "dtf-ha-worker"


def pod_names(statefulset: dict[str, Any]) -> list[str]:
    return [f"{statefulset['metadata']['name']}-{i}" for i in range(statefulset["spec"]["replicas"])]


def ha_configs() -> dict[str, CoordinatorConfig]:
    """Each pod of the StatefulSet's configuration, read with that pod's environment."""
    sts = find("StatefulSet", HA_COORDINATORS)
    (container,) = sts["spec"]["template"]["spec"]["containers"]
    configmap_name, key = mounted_config(sts, container, config_arg(container["args"]))
    data = yaml.safe_load(find("ConfigMap", configmap_name)["data"][key])
    return {
        pod: parse_config(CoordinatorConfig, data, env=container_env(sts, container, pod)) for pod in pod_names(sts)
    }


def selects(service_or_budget: dict[str, Any], workload: dict[str, Any]) -> bool:
    selector = service_or_budget["spec"]["selector"]
    selector = selector.get("matchLabels", selector)
    return bool(selector) and selector.items() <= workload["spec"]["template"]["metadata"]["labels"].items()


def documented_command(prefix: str) -> list[str]:
    """The first shell command of docs/deployment.md's code blocks that starts with `prefix`."""
    blocks = re.findall(r"```bash\n(.*?)```", DEPLOYMENT_DOC.read_text(), flags=re.S)
    for line in re.sub(r"\\\n\s*", " ", "\n".join(blocks)).splitlines():
        if line.strip().startswith(prefix):
            return shlex.split(line)
    raise AssertionError(f"docs/deployment.md shows no `{prefix}` command")


def test_ha_runs_an_odd_number_of_coordinators_with_one_peer_list() -> None:
    sts = find("StatefulSet", HA_COORDINATORS)
    replicas = sts["spec"]["replicas"]
    assert replicas >= 3 and replicas % 2 == 1, "Raft needs a majority: run 3 or 5 coordinators, never an even count"
    majority = replicas // 2 + 1
    configs = ha_configs()
    for pod, config in configs.items():
        ha = config.high_availability
        assert ha.enabled and ha.coordinator_id == pod
        assert [p.id for p in ha.peers] == list(configs), "the peers are exactly the StatefulSet's pods"
        assert ha.quorum_size in (None, majority)
        assert ha.peers == configs[pod_names(sts)[0]].high_availability.peers, "one peer list for every pod"
    budget = find("PodDisruptionBudget", HA_COORDINATORS)
    assert selects(budget, sts)
    assert budget["spec"]["maxUnavailable"] <= replicas - majority, "a drain must leave a majority running"


def test_ha_peers_resolve_through_the_headless_service() -> None:
    sts = find("StatefulSet", HA_COORDINATORS)
    headless = find("Service", sts["spec"]["serviceName"])
    assert headless["spec"]["clusterIP"] == "None" and selects(headless, sts)
    assert headless["spec"]["publishNotReadyAddresses"] is True, "peers must resolve before any pod is ready"
    service_ports = {p["name"]: (p["port"], p["targetPort"]) for p in headless["spec"]["ports"]}
    (container,) = sts["spec"]["template"]["spec"]["containers"]
    container_ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    for pod, config in ha_configs().items():
        ha, server = config.high_availability, config.server
        assert container_ports["raft"] == ha.raft_port
        assert service_ports["raft"] == (ha.raft_port, "raft")
        for peer in ha.peers:
            # a StatefulSet pod is <pod>.<serviceName> in the pods' namespace
            host = f"{peer.id}.{headless['metadata']['name']}"
            assert peer.host == host, f"{pod}: peer {peer.id} is not its headless-Service name"
            assert peer.port == ha.raft_port
            assert peer.api_url == f"http://{host}:{server.port}" and service_ports["api"][0] == server.port
            assert peer.grpc_address == f"{host}:{server.workers_port}"
            assert service_ports["worker-api"][0] == server.workers_port


def test_ha_client_service_selects_every_coordinator_without_the_raft_port() -> None:
    sts = find("StatefulSet", HA_COORDINATORS)
    service = find("Service", HA_COORDINATORS)
    assert selects(service, sts)
    assert "statefulset.kubernetes.io/pod-name" not in service["spec"]["selector"]
    assert "raft" not in {p["name"] for p in service["spec"]["ports"]}


def test_ha_tls_files_are_the_secret_made_as_documented(tmp_path: Path) -> None:
    sts = find("StatefulSet", HA_COORDINATORS)
    pods = pod_names(sts)

    # `dtf certs create`, as docs/deployment.md shows it, into a folder of our own
    certs = documented_command("dtf certs create")
    options = dict(zip(certs[3::2], certs[4::2], strict=True))
    assert options["--nodes"].split(",") == pods
    for host in options["--hosts"].split(","):
        assert host.split(".")[0] in pods and host.split(".", 1)[1] == sts["spec"]["serviceName"]
    out = tmp_path / options["--out"]
    assert certs[:3] == ["dtf", "certs", "create"]
    assert dtf_main([*certs[1:3], *(x for k, v in {**options, "--out": str(out)}.items() for x in (k, v))]) == 0

    # the Secret's keys, as the documented `kubectl create secret` names them
    volumes = {v["name"]: v for v in sts["spec"]["template"]["spec"]["volumes"]}
    (secret_name,) = {v["secret"]["secretName"] for v in volumes.values() if "secret" in v}
    secret = documented_command(f"kubectl create secret generic {secret_name} ")
    files: dict[str, Path] = {}
    for arg in secret[5:]:
        source = arg.removeprefix("--from-file=")
        key, _, path = source.rpartition("=") if "=" in source else (PurePosixPath(source).name, "", source)
        assert PurePosixPath(path).parent == PurePosixPath(options["--out"])
        files[key] = out / PurePosixPath(path).name
    assert tls.CA_KEY not in files, "the CA's key stays out of the cluster"
    expected = [tls.CA_CERT, *(f"{pod}{suffix}" for pod in pods for suffix in (".pem", "-key.pem"))]
    assert sorted(files) == sorted(expected), "the Secret holds ca.pem and every pod's certificate and key"

    (container,) = sts["spec"]["template"]["spec"]["containers"]
    for pod, config in ha_configs().items():
        paths = config.high_availability.tls
        local = []
        for name in ("ca_file", "cert_file", "key_file"):
            path = PurePosixPath(getattr(paths, name))
            mount = next(m for m in container["volumeMounts"] if path.is_relative_to(m["mountPath"]))
            assert mount.get("readOnly") is True
            volume = volumes[mount["name"]].get("secret", {})
            assert volume.get("secretName") == secret_name, f"{pod}: {name} is not from {secret_name}"
            key = path.relative_to(mount["mountPath"]).as_posix()
            if "items" in volume:
                key = next(item["key"] for item in volume["items"] if item["path"] == key)
            assert key in files, f"{pod}: {name} {path} is not a key of the documented Secret"
            local.append(files[key])
        ca_file, cert_file, key_file = local
        tls.load_tls(ca_file, cert_file, key_file)  # readable, signed by the CA, the key matches
        (info,) = tls.certificate_infos(cert_file.read_bytes())
        assert info.common_name == pod, f"{pod} would present {info.common_name}'s certificate"


def test_ha_workers_know_every_coordinator() -> None:
    worker = find("Deployment", HA_WORKERS)
    (container,) = worker["spec"]["template"]["spec"]["containers"]
    configmap_name, key = mounted_config(worker, container, config_arg(container["args"]))
    config = parse_config(
        WorkerConfig,
        yaml.safe_load(find("ConfigMap", configmap_name)["data"][key]),
        env=container_env(worker, container),
    )
    (any_config, *_) = ha_configs().values()
    addresses = {peer.grpc_address for peer in any_config.high_availability.peers}
    fallbacks = [parse_target(url) for url in config.coordinator.fallback_urls]
    # a follower's NOT_LEADER names the leader's grpc_address; the worker's list must hold the same strings
    assert {target for target, _secure in fallbacks} == addresses
    assert not any(secure for _target, secure in fallbacks)
    service = urllib.parse.urlsplit(config.coordinator.url).hostname
    assert selects(find("Service", str(service)), find("StatefulSet", HA_COORDINATORS))


# ---------------------------------------------------------------- Docker Compose


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's `${VAR}`, `${VAR:-default}` and `${VAR:?error}`, for the test's needs."""

    def one(match: re.Match[str]) -> str:
        name, op, arg = match.group(1), match.group(2), match.group(3)
        if name in env:
            return env[name]
        assert op != ":?", f"compose requires {name}: {arg}"
        return arg or ""

    return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:-|:\?)([^}]*))?\}", one, value)


def test_compose_runs_one_coordinator_and_two_workers() -> None:
    (compose,) = documents(DEPLOY / "docker-compose.yaml")
    services = compose["services"]
    assert set(services) == {"coordinator", "worker-1", "worker-2"}
    shell = {"JWT_SECRET": SIGNING_SECRET, "WORKER_API_KEY": WORKER_TOKEN}
    for service in services.values():
        build = service["build"]
        assert (DEPLOY / build["context"] / build["dockerfile"]).resolve().is_file()

    coordinator = services["coordinator"]
    env = {k: interpolate(v, shell) for k, v in coordinator["environment"].items()}
    config = load_config(CoordinatorConfig, DEPLOY / "config" / "coordinator.yaml", env=env)
    config.check_secret()
    published = {int(p.split(":")[1].split("/")[0]) for p in coordinator["ports"]}
    assert {config.server.port, config.server.workers_port} <= published
    assert any(v.endswith(f":{config.server.data_dir}") for v in coordinator["volumes"])

    for name in ("worker-1", "worker-2"):
        worker = services[name]
        assert worker["depends_on"]["coordinator"]["condition"] == "service_healthy"
        env = {k: interpolate(v, shell) for k, v in worker["environment"].items()}
        assert "JWT_SECRET" not in env, "workers never hold the signing secret"
        wconfig = load_config(WorkerConfig, DEPLOY / "config" / "worker.yaml", env=env)
        assert wconfig.worker.id == name
        assert wconfig.coordinator.url == f"http://coordinator:{config.server.workers_port}"
        assert wconfig.coordinator.api_key == WORKER_TOKEN
        assert any(v.endswith(":/app/data") for v in worker["volumes"])


# ---------------------------------------------------------------- Dockerfiles


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    lines = [line for line in path.read_text().splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n\s*", " ", "\n".join(lines))
    result = []
    for line in joined.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            result.append((word.upper(), rest.strip()))
    return result


def test_there_are_two_dockerfiles() -> None:
    assert [p.name for p in DOCKERFILES] == ["Dockerfile.coordinator", "Dockerfile.worker"]


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_copies_what_exists_into_the_alembic_layout(path: Path) -> None:
    steps = instructions(path)
    assert steps[0] == ("FROM", "python:3.11-slim")
    assert ("WORKDIR", "/app") in steps
    copies: dict[str, str] = {}
    for word, args in steps:
        if word == "COPY":
            *sources, dest = shlex.split(args)
            for source in sources:
                assert (ROOT / source).exists(), f"{path.name} copies missing {source}"
                copies[source] = dest if not dest.endswith("/") else dest + PurePosixPath(source).name
    assert copies["src"] == "/app/src" and copies["alembic"] == "/app/alembic"
    # The package's migrations link resolves inside the image as it does in the checkout.
    link = ROOT / "src" / "dtf_coordinator" / "migrations"
    assert link.is_symlink() and link.resolve() == ROOT / "alembic"
    assert link == migrate.SCRIPT_LOCATION
    assert any(word == "RUN" and "pip install /app" in args for word, args in steps), "a regular install of /app"

    user = [args for word, args in steps if word == "USER"]
    assert user and user[-1].split(":")[0] not in ("root", "0")
    cmd = next(args for word, args in reversed(steps) if word == "CMD")
    config_path = config_arg(yaml.safe_load(cmd))
    assert config_path in copies.values(), f"{config_path} is not copied into the image"
    role = path.name.split(".")[1]
    assert yaml.safe_load(cmd)[0] == role and config_path == f"/app/config/{role}.yaml"
    entrypoint = yaml.safe_load(next(args for word, args in steps if word == "ENTRYPOINT"))
    assert entrypoint[-1] == "dtf"
    load_config(MODELS[f"{role}.yaml"], ROOT / next(s for s, d in copies.items() if d == config_path), env={})

    ignore = (path.parent / f"{path.name}.dockerignore").read_text().splitlines()
    for source in copies:
        assert f"!{source}" in ignore or f"!{PurePosixPath(source).parent}" in ignore, f"{source} is ignored"


def test_coordinator_image_exposes_its_ports() -> None:
    steps = instructions(DEPLOY / "Dockerfile.coordinator")
    exposed = {int(p) for word, args in steps if word == "EXPOSE" for p in args.split()}
    assert exposed == {8080, 8081, 8082}
    assert any(word == "HEALTHCHECK" and "/health" in args for word, args in steps)
