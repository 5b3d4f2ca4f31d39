"""The deployment files (deploy/, .github/workflows/preview.yml) hold together.

Every Kubernetes object under deploy/k8s, the base and each overlay as rendered, validates
against pinned Kubernetes schemas (kubernetes-validate bundles them: no network). Overlays
are rendered by a small kustomize limited to the features they use (anything else fails the
test, so it stays honest), and compared with ``kubectl kustomize`` where kubectl is
installed. The HorizontalPodAutoscaler's metric is checked against what the real cloud app
serves on ``/metrics`` (its handler called directly: this tier opens no sockets) and against
the prometheus-adapter rule; the Deployment's arguments are parsed by the real command line.
The compose file and the preview workflow are checked for their wiring; coturn accepting the
cloud app's credentials is tests/turn/test_compose_turn.py.
"""

from __future__ import annotations

import copy
import functools
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from aiohttp.test_utils import make_mocked_request

from scope_relay.cli.main import build_parser

from helpers.compose import VARIABLE, compose, env_file

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
OVERLAYS = ("preview", "production")
#: Kubernetes versions the manifests must be valid for: the schemas kubernetes-validate
#: bundles (pyproject.toml pins a range of releases that ship both)
KUBERNETES_VERSIONS = ("1.30", "1.33")
#: custom resources: no schema in kubernetes-validate; checked by hand below
CUSTOM_RESOURCES = {("monitoring.coreos.com/v1", "ServiceMonitor")}
#: kinds the namespace transformer leaves alone (cluster-scoped)
CLUSTER_SCOPED = {"Namespace"}
#: the cloud app's container in the Deployment
CLOUD, CONTAINER = "scope-relay-cloud", "cloud"
#: seconds the preStop hook sleeps before SIGTERM starts the drain
PRESTOP_SLEEP = 10
METRIC = "scope_cloud_active_sessions"


# --- a small kustomize ----------------------------------------------------------------------

def load_all(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def _pointer(path: str) -> list[str]:
    assert path.startswith("/"), path
    return [part.replace("~1", "/").replace("~0", "~") for part in path[1:].split("/")]


def apply_json6902(doc: Any, ops: list[dict[str, Any]]) -> None:
    """RFC 6902 add / replace / remove (what the overlays use), in place."""
    for op in ops:
        *parents, last = _pointer(op["path"])
        node = doc
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        kind = op["op"]
        if isinstance(node, list):
            if kind == "add":
                node.insert(len(node) if last == "-" else int(last), copy.deepcopy(op["value"]))
                continue
            index = int(last)
            assert 0 <= index < len(node), op
        else:
            index = last  # type: ignore[assignment]
            assert kind == "add" or index in node, f"{op['path']} is not there to {kind}"
        if kind in ("add", "replace"):
            node[index] = copy.deepcopy(op["value"])
        elif kind == "remove":
            del node[index]
        else:
            raise AssertionError(f"JSON patch op {kind!r} not supported here")


def _matches(doc: dict[str, Any], target: dict[str, Any]) -> bool:
    assert set(target) <= {"kind", "name", "group", "version"}, target
    group, _, version = doc["apiVersion"].rpartition("/")
    return (target.get("kind", doc["kind"]) == doc["kind"]
            and target.get("name", doc["metadata"]["name"]) == doc["metadata"]["name"]
            and target.get("group", group) == group and target.get("version", version) == version)


def _set_images(doc: dict[str, Any], images: list[dict[str, str]]) -> None:
    spec = doc.get("spec", {}).get("template", {}).get("spec", {})
    for container in spec.get("containers", []) + spec.get("initContainers", []):
        name, _, tag = container["image"].partition(":")
        for image in images:
            assert set(image) <= {"name", "newName", "newTag"}, image
            if image["name"] == name:
                container["image"] = f"{image.get('newName', name)}:{image.get('newTag', tag)}"


KUSTOMIZE_FIELDS = {"apiVersion", "kind", "namespace", "resources", "images", "patches"}


def kustomize(directory: Path) -> list[dict[str, Any]]:
    """``kustomize build directory``, for the fields in KUSTOMIZE_FIELDS only."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unsupported = set(kustomization) - KUSTOMIZE_FIELDS
    assert not unsupported, f"{directory}: extend this test's kustomize for {unsupported}"
    docs: list[dict[str, Any]] = []
    for entry in kustomization.get("resources", []):
        path = directory / entry
        docs += kustomize(path) if path.is_dir() else load_all(path)
    for patch in kustomization.get("patches", []):
        assert set(patch) == {"target", "patch"}, f"only inline JSON 6902 patches: {patch}"
        targets = [doc for doc in docs if _matches(doc, patch["target"])]
        assert targets, f"{directory}: patch target {patch['target']} matches nothing"
        for doc in targets:
            apply_json6902(doc, yaml.safe_load(patch["patch"]))
    for doc in docs:
        _set_images(doc, kustomization.get("images", []))
        if "namespace" in kustomization and doc["kind"] not in CLUSTER_SCOPED:
            doc["metadata"]["namespace"] = kustomization["namespace"]
    return docs


@functools.cache
def _rendered() -> dict[str, list[dict[str, Any]]]:
    return {"base": kustomize(K8S / "base"), **{o: kustomize(K8S / "overlays" / o) for o in OVERLAYS}}


def rendered() -> dict[str, list[dict[str, Any]]]:
    """The base and each overlay, built (a fresh copy each time: tests may change it)."""
    return copy.deepcopy(_rendered())


def one(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def container(docs: list[dict[str, Any]], kind: str, name: str, container_name: str) -> dict[str, Any]:
    spec = one(docs, kind, name)["spec"]["template"]["spec"]
    return next(c for c in spec["containers"] if c["name"] == container_name)


def env_values(docs: list[dict[str, Any]], c: dict[str, Any]) -> dict[str, str]:
    """The container's environment as Kubernetes builds it, ConfigMaps resolved and Secrets
    shown as ``secret:<name>/<key>``."""
    out = {}
    for var in c.get("env", []):
        if "value" in var:
            out[var["name"]] = var["value"]
        elif ref := var.get("valueFrom", {}).get("configMapKeyRef"):
            out[var["name"]] = one(docs, "ConfigMap", ref["name"])["data"][ref["key"]]
        elif ref := var.get("valueFrom", {}).get("secretKeyRef"):
            out[var["name"]] = f"secret:{ref['name']}/{ref['key']}"
    return out


def found(pattern: str, text: str) -> str:
    """The first group of ``pattern``'s first match in ``text`` (lines anchored), which must exist."""
    match = re.search(pattern, text, re.MULTILINE)
    assert match, f"{pattern!r} not in {text!r}"
    return match.group(1)


def expand(arg: str, env: dict[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion in command and args (unknown names stay as they are)."""
    return re.sub(r"\$\((\w+)\)", lambda m: env.get(m.group(1), m.group(0)), arg)


def cloud_args(docs: list[dict[str, Any]]):
    """The cloud container's command line, parsed by the real ``scope-relay`` parser."""
    c = container(docs, "Deployment", CLOUD, CONTAINER)
    assert c["command"] == ["scope-relay", "cloud"]
    env = env_values(docs, c)
    return build_parser().parse_args(["cloud", *(expand(a, env) for a in c["args"])])


# --- Kubernetes -----------------------------------------------------------------------------

def test_kustomizations_name_files_that_exist():
    kustomizations = sorted(K8S.rglob("kustomization.yaml"))
    assert {p.parent.relative_to(K8S).as_posix() for p in kustomizations} >= {
        "base", "overlays/preview", "overlays/production"}
    for path in kustomizations:
        kustomization = yaml.safe_load(path.read_text())
        for entry in kustomization.get("resources", []):
            target = path.parent / entry
            assert target.exists(), f"{path}: {entry} does not exist"
            if target.is_dir():
                assert (target / "kustomization.yaml").exists(), f"{path}: {entry} has no kustomization"
    # every manifest in base is built: none forgotten
    base = yaml.safe_load((K8S / "base" / "kustomization.yaml").read_text())["resources"]
    assert sorted(base) == sorted(p.name for p in (K8S / "base").glob("*.yaml")
                                  if p.name != "kustomization.yaml")


def all_objects() -> list[tuple[str, dict[str, Any]]]:
    """Every Kubernetes object: each build as rendered, and the manifests outside the builds."""
    objects = [(f"{build}: {d['kind']}/{d['metadata']['name']}", d)
               for build, docs in rendered().items() for d in docs]
    built = {p for p in K8S.rglob("*.yaml") if p.parent.name in ("base", *OVERLAYS)}
    for path in sorted(set(K8S.rglob("*.yaml")) - built):
        if path.parent.name == "prometheus-adapter":
            continue  # Helm values, not objects (checked in the HPA test)
        objects += [(f"{path.relative_to(K8S)}: {d['kind']}", d) for d in load_all(path)]
    return objects


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_object_validates_against_pinned_schemas(version):
    checked = 0
    for label, doc in all_objects():
        if (doc["apiVersion"], doc["kind"]) in CUSTOM_RESOURCES:
            continue
        try:
            used = kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{label} (Kubernetes {version}): {exc.message} at {list(exc.path)}")
        assert used == version, f"schemas for {version} not bundled (got {used})"
        checked += 1
    # base (8 kinds) + 2 overlays with their namespaces + the example Secret
    assert checked >= 3 * 7 + 2 + 1


def test_the_validator_is_strict():
    deployment = copy.deepcopy(one(rendered()["production"], "Deployment", CLOUD))
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {"httpGet": {"path": "/"}}
    with pytest.raises(kubernetes_validate.ValidationError):  # no port, misspelt field
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[0], strict=True)


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed")
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_this_kustomize_agrees_with_kubectl(overlay):
    out = subprocess.run(["kubectl", "kustomize", str(K8S / "overlays" / overlay)],
                         check=True, capture_output=True, text=True, timeout=60).stdout
    key = lambda d: (d["kind"], d["metadata"]["name"])
    theirs = {key(d): d for d in yaml.safe_load_all(out) if d}
    ours = {key(d): d for d in kustomize(K8S / "overlays" / overlay)}
    assert ours == theirs


@pytest.mark.parametrize("build", ["base", *OVERLAYS])
def test_cloud_probes_ports_gpu_and_grace_period(build):
    docs = rendered()[build]
    pod = one(docs, "Deployment", CLOUD)["spec"]["template"]["spec"]
    c = container(docs, "Deployment", CLOUD, CONTAINER)
    args = cloud_args(docs)
    (port,) = c["ports"]
    assert port["containerPort"] == args.port and args.host == "0.0.0.0"
    assert c["readinessProbe"]["httpGet"] == {"path": "/ready", "port": port["name"]}
    assert c["livenessProbe"]["httpGet"] == {"path": "/health", "port": port["name"]}
    assert c["startupProbe"]["httpGet"]["path"] == "/health"
    assert c["resources"]["limits"]["nvidia.com/gpu"] == "1"
    # preStop sleeps, then SIGTERM starts the drain: the grace period covers both
    assert c["lifecycle"]["preStop"]["exec"]["command"] == ["/bin/sh", "-c", f"sleep {PRESTOP_SLEEP}"]
    assert pod["terminationGracePeriodSeconds"] > PRESTOP_SLEEP + args.drain_seconds
    assert pod["terminationGracePeriodSeconds"] <= PRESTOP_SLEEP + args.drain_seconds + 60
    # the TURN URL the app hands out is aiortc's kind: plain turn: first (only the first is used)
    assert args.turn_url and args.turn_url[0].startswith("turn:") and "transport=udp" in args.turn_url[0]


async def test_probed_and_scraped_paths_are_served_by_the_app():
    from scope_relay.cloud.app import CloudConfig, create_app

    app = create_app(CloudConfig())
    paths = {route.resource.canonical for route in app.router.routes()}
    assert {"/ready", "/health", "/metrics", "/ws"} <= paths
    ingress = one(rendered()["production"], "Ingress", CLOUD)
    for rule in ingress["spec"]["rules"]:
        for path in rule["http"]["paths"]:
            assert path["path"] in paths or any(p.startswith(path["path"] + "/") for p in paths)
            assert path["path"] not in ("/metrics", "/health", "/ready")  # stay in the cluster


@pytest.mark.parametrize("build", ["base", *OVERLAYS])
def test_service_ingress_and_monitor_reach_the_cloud_pods(build):
    docs = rendered()[build]
    deployment = one(docs, "Deployment", CLOUD)
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    (port,) = container(docs, "Deployment", CLOUD, CONTAINER)["ports"]
    service = one(docs, "Service", CLOUD)
    assert service["spec"]["selector"].items() <= pod_labels.items()
    (service_port,) = service["spec"]["ports"]
    assert service_port["targetPort"] == port["name"]
    ingress = one(docs, "Ingress", CLOUD)
    annotations = ingress["metadata"]["annotations"]
    for timeout in ("proxy-read-timeout", "proxy-send-timeout"):  # long-lived WebSockets
        assert int(annotations[f"nginx.ingress.kubernetes.io/{timeout}"]) >= 3600
    backends = [p["backend"]["service"] for r in ingress["spec"]["rules"] for p in r["http"]["paths"]]
    assert {"name": CLOUD, "port": {"name": service_port["name"]}} in backends
    assert all(b["name"] == CLOUD for b in backends)
    assert [p["path"] for r in ingress["spec"]["rules"] for p in r["http"]["paths"]
            if p["pathType"] == "Exact"] == ["/ws"]
    monitor = one(docs, "ServiceMonitor", CLOUD)
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    (endpoint,) = monitor["spec"]["endpoints"]
    assert (endpoint["port"], endpoint["path"]) == (service_port["name"], "/metrics")
    pdb = one(docs, "PodDisruptionBudget", CLOUD)
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert pdb["spec"].get("maxUnavailable") == 1 or pdb["spec"].get("minAvailable") == 1


def secret_files(docs: list[dict[str, Any]], kind: str, name: str, c: dict[str, Any]) -> dict[str, str]:
    """Files the container sees from Secret volumes: path -> ``secret:<name>/<key>``."""
    volumes = {v["name"]: v for v in one(docs, kind, name)["spec"]["template"]["spec"].get("volumes", [])}
    out = {}
    for mount in c.get("volumeMounts", []):
        if secret := volumes[mount["name"]].get("secret"):
            for item in secret["items"]:
                out[f"{mount['mountPath']}/{item['path']}"] = f"secret:{secret['secretName']}/{item['key']}"
    return out


@pytest.mark.parametrize("build", ["base", *OVERLAYS])
def test_cloud_app_and_coturn_share_one_turn_secret(build):
    docs = rendered()[build]
    cloud_env = env_values(docs, container(docs, "Deployment", CLOUD, CONTAINER))
    coturn = container(docs, "DaemonSet", "coturn", "coturn")
    coturn_env = env_values(docs, coturn)
    coturn_args = [expand(a, coturn_env) for a in coturn["args"]]
    assert cloud_env["SCOPE_TURN_SECRET"] == "secret:scope-relay-secrets/turn-secret"
    assert "--use-auth-secret" in coturn_args
    # coturn reads the same Secret key from a file (entrypoint.sh): never from its arguments
    # or environment, which `ps` and the pod spec show
    files = secret_files(docs, "DaemonSet", "coturn", coturn)
    assert files[coturn_env["TURN_SECRET_FILE"]] == cloud_env["SCOPE_TURN_SECRET"]
    assert not any("secret:" in v for v in coturn_env.values())
    assert not any("static-auth-secret" in a for a in coturn["command"] + coturn_args)
    assert cloud_env["SCOPE_CLOUD_API_KEY"] == "secret:scope-relay-secrets/api-key"
    example = one(load_all(K8S / "secret.example.yaml"), "Secret", "scope-relay-secrets")
    assert set(example["stringData"]) == {"api-key", "turn-secret"}
    # the coturn nodes publish the TURN port the cloud app hands out
    ds = one(docs, "DaemonSet", "coturn")["spec"]["template"]["spec"]
    assert ds["hostNetwork"] is True
    turn_port = int(found(r":(\d+)\?", cloud_args(docs).turn_url[0]))
    assert f"--listening-port={turn_port}" in coturn_args
    assert f"--realm={one(docs, 'ConfigMap', 'scope-relay-config')['data']['turn-realm']}" in coturn_args


def peer_rules(text: str) -> list[str]:
    """The option lines of a coturn config (comments and blank lines dropped)."""
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


@pytest.mark.parametrize("build", ["base", *OVERLAYS])
def test_coturn_runs_one_peer_rule_list_in_compose_and_kubernetes(build):
    """One deny list: the files Compose mounts are the ConfigMap's, byte for byte; both start
    coturn through that script (which reads the rules), and neither passes -n (which makes
    coturn ignore the config file, rules and secret with it). tests/turn/test_peer_rules.py
    runs coturn with them."""
    docs = rendered()[build]
    files = one(docs, "ConfigMap", "coturn-config")["data"]
    assert files == {name: (DEPLOY / "coturn" / name).read_text()
                     for name in ("entrypoint.sh", "peer-rules.conf")}
    rules = peer_rules(files["peer-rules.conf"])
    assert {"no-tcp-relay", "no-multicast-peers"} <= set(rules)
    denied = {line.split("=", 1)[1] for line in rules if line.startswith("denied-peer-ip=")}
    for first in ("10.0.0.0", "172.16.0.0", "192.168.0.0", "100.64.0.0", "127.0.0.0", "169.254.0.0",
                  "198.18.0.0", "192.0.2.0", "198.51.100.0", "203.0.113.0", "224.0.0.0",
                  "::1", "fc00::", "fe80::", "2001:db8::"):
        assert any(r == first or r.startswith(first + "-") for r in denied), first
    assert not any(r.startswith("::-") for r in denied)  # coturn: a range from :: denies everything

    coturn = container(docs, "DaemonSet", "coturn", "coturn")
    mount = next(m["mountPath"] for m in coturn["volumeMounts"] if m["name"] == "coturn-config")
    assert coturn["command"] == ["/bin/sh", f"{mount}/entrypoint.sh"]
    services = compose(env_file(DEPLOY / "compose.env.example"))["services"]
    source, target, _ = services["coturn"]["volumes"][0].split(":")
    assert (DEPLOY / source).resolve() == DEPLOY / "coturn"
    assert services["coturn"]["entrypoint"] == ["/bin/sh", f"{target}/entrypoint.sh"]
    for args in (coturn["args"], services["coturn"]["command"]):
        assert "-n" not in args
        assert len([a for a in args if a.startswith("--allowed-peer-ip=")]) == 1


def test_turn_gateways_of_overlays_sharing_a_cluster_do_not_collide():
    selectors = {o: one(rendered()[o], "DaemonSet", "coturn")["spec"]["template"]["spec"]["nodeSelector"]
                 for o in OVERLAYS}
    assert selectors["preview"] != selectors["production"]


def metric_families(text: str) -> dict[str, str]:
    """``# TYPE name kind`` lines of a Prometheus text exposition."""
    return dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.MULTILINE))


@pytest.mark.parametrize("build", ["base", *OVERLAYS])
async def test_hpa_scales_on_the_sessions_metric_the_app_exports(build):
    from scope_relay.cloud.app import CloudConfig, create_app

    docs = rendered()[build]
    args = cloud_args(docs)
    # what the app really serves on /metrics, configured as the Deployment configures it
    app = create_app(CloudConfig(max_sessions=args.max_sessions))
    handler = next(r.handler for r in app.router.routes()
                   if r.method == "GET" and r.resource.canonical == "/metrics")
    response = await handler(make_mocked_request("GET", "/metrics", app=app))
    text = response.body.decode()
    families = metric_families(text)

    hpa = one(docs, "HorizontalPodAutoscaler", CLOUD)
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": CLOUD}
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "Pods"
    name = metric["pods"]["metric"]["name"]
    assert name == METRIC and families.get(name) == "gauge", sorted(families)
    # the target is below what one pod takes, so the HPA adds pods before they are full
    target = float(metric["pods"]["target"]["averageValue"])
    capacity = float(found(r"^scope_cloud_session_capacity (\S+)$", text))
    assert capacity == args.max_sessions
    assert 0.5 * capacity <= target < capacity
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    assert "replicas" not in one(docs, "Deployment", CLOUD)["spec"]  # the HPA owns the count

    # prometheus-adapter serves that name from that series, per pod
    values = yaml.safe_load((K8S / "prometheus-adapter" / "values.yaml").read_text())
    rules = [r for r in values["rules"]["custom"] if r["name"]["as"] == name]
    assert len(rules) == 1, values["rules"]
    (rule,) = rules
    series = found(r"^\s*(\w+)\{", rule["seriesQuery"])
    assert series == name and re.fullmatch(rule["name"]["matches"], series)
    assert rule["resources"]["overrides"]["pod"] == {"resource": "pod"}
    assert rule["resources"]["overrides"]["namespace"] == {"resource": "namespace"}
    assert "<<.Series>>" in rule["metricsQuery"] and "<<.LabelMatchers>>" in rule["metricsQuery"]


@pytest.mark.parametrize("build", ["base", *OVERLAYS])
def test_every_cloud_socket_shares_the_ingress_address_so_the_per_address_cap_is_off(build):
    args = cloud_args(rendered()[build])
    assert args.max_sockets_per_address == 0
    assert args.max_sockets_per_key > 0 and args.message_rate > 0  # these stay


@pytest.mark.parametrize("build", ["base", *OVERLAYS])
async def test_prometheus_scrapes_metrics_with_the_key_the_app_requires(build):
    """The ServiceMonitor sends the API key from the Secret the app reads it from, and the
    real app (its middlewares and handler, no socket) serves the HPA's metric to exactly
    that request, and 401 without it (what the scrape got before)."""
    from scope_relay.cloud.app import CloudConfig, create_app

    docs = rendered()[build]
    cloud_env = env_values(docs, container(docs, "Deployment", CLOUD, CONTAINER))
    (endpoint,) = one(docs, "ServiceMonitor", CLOUD)["spec"]["endpoints"]
    auth = endpoint["authorization"]
    credentials = auth["credentials"]
    assert f"secret:{credentials['name']}/{credentials['key']}" == cloud_env["SCOPE_CLOUD_API_KEY"]
    scheme = auth.get("type", "Bearer")  # Prometheus' default

    key = "k8s-scrape-key"
    app = create_app(CloudConfig(api_key=key, max_sessions=cloud_args(docs).max_sessions))
    route = next(r for r in app.router.routes()
                 if r.method == "GET" and r.resource.canonical == endpoint["path"])

    async def scrape(headers: dict[str, str]):
        handler = route.handler
        for middleware in reversed(app.middlewares):
            handler = functools.partial(middleware, handler=handler)
        return await handler(make_mocked_request("GET", endpoint["path"], headers=headers, app=app))

    scraped = await scrape({"Authorization": f"{scheme} {key}"})
    assert scraped.status == 200 and f"# TYPE {METRIC} gauge" in scraped.body.decode()
    assert (await scrape({})).status == 401
    # Prometheus may reach the port: the NetworkPolicy admits its namespace there
    policy = one(docs, "NetworkPolicy", CLOUD)
    tcp_rules = [r for r in policy["spec"]["ingress"]
                 if any(p.get("protocol") == "TCP" and p.get("port") == endpoint["port"] for p in r["ports"])]
    namespaces = {peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
                  for rule in tcp_rules for peer in rule["from"]}
    assert "monitoring" in namespaces


@pytest.mark.parametrize("build", ["base", *OVERLAYS])
def test_pods_are_locked_down(build):
    docs = rendered()[build]
    pod = one(docs, "Deployment", CLOUD)["spec"]["template"]
    spec = pod["spec"]
    c = container(docs, "Deployment", CLOUD, CONTAINER)
    assert spec["automountServiceAccountToken"] is False
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    volumes = {v["name"]: v for v in spec["volumes"]}
    writable = {m["mountPath"] for m in c["volumeMounts"] if "emptyDir" in volumes[m["name"]]}
    assert {"/tmp", "/home/scope"} <= writable  # TMPDIR and HOME (caches) of the image's user
    # the NetworkPolicy covers the cloud pods, both ways
    policy = one(docs, "NetworkPolicy", CLOUD)
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    assert set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    assert any(b["ipBlock"].get("except") == ["169.254.0.0/16"]
               for rule in policy["spec"]["egress"] for b in rule["to"])  # no metadata service

    coturn_pod = one(docs, "DaemonSet", "coturn")["spec"]["template"]["spec"]
    coturn = container(docs, "DaemonSet", "coturn", "coturn")
    context = coturn_pod["securityContext"]
    assert context["runAsNonRoot"] is True and context["runAsUser"] > 0  # numeric: checkable
    assert context["seccompProfile"] == {"type": "RuntimeDefault"}
    assert coturn_pod["automountServiceAccountToken"] is False
    assert coturn["securityContext"]["readOnlyRootFilesystem"] is True
    runtime = expand("$(TURN_RUNTIME_DIR)", env_values(docs, coturn))
    assert runtime in {m["mountPath"] for m in coturn["volumeMounts"]}  # where the config is written


# --- compose --------------------------------------------------------------------------------

def test_compose_env_example_sets_every_required_variable():
    example = env_file(DEPLOY / "compose.env.example")
    text = (DEPLOY / "compose.yaml").read_text()
    used = {m.group(1) or m.group(4) for m in VARIABLE.finditer(text) if m.group(0) != "$$"}
    assert used <= set(example), f"missing from compose.env.example: {used - set(example)}"
    compose(example)  # no ${VAR:?...} left unset
    with pytest.raises(KeyError, match="SCOPE_TURN_SECRET"):
        compose({k: v for k, v in example.items() if k != "SCOPE_TURN_SECRET"})


def test_compose_cloud_and_coturn_share_the_secret(monkeypatch):
    env = env_file(DEPLOY / "compose.env.example") | {"SCOPE_TURN_SECRET": "s3cret",
                                                        "SCOPE_CLOUD_API_KEY": "k3y"}
    services = compose(env)["services"]
    assert {"cloud", "coturn"} <= set(services)
    cloud, coturn = services["cloud"], services["coturn"]
    # the cloud app's command line, through the real parser, in its container's environment
    for name, value in cloud["environment"].items():
        monkeypatch.setenv(name, value)
    assert cloud["entrypoint"] == ["scope-relay", "cloud"]
    args = build_parser().parse_args(["cloud", *cloud["command"]])
    assert args.turn_secret == "s3cret" and args.api_key == "k3y"
    assert args.host == "0.0.0.0" and cloud["ports"][0].endswith(f":{args.port}:{args.port}")
    assert args.turn_url == [f"turn:{env['SCOPE_TURN_HOST']}:{env['SCOPE_TURN_PORT']}?transport=udp"]
    # coturn checks the REST credentials the cloud app signs, with the same secret, read
    # from the file Compose writes it to (never its command line: ps, docker inspect)
    assert "--use-auth-secret" in coturn["command"]
    assert not any("s3cret" in str(part) for part in coturn["command"] + coturn["entrypoint"])
    assert coturn["secrets"] == ["turn_secret"]
    assert compose(env)["secrets"]["turn_secret"] == {"environment": "SCOPE_TURN_SECRET"}
    assert f"--listening-port={env['SCOPE_TURN_PORT']}" in coturn["command"]
    assert coturn["network_mode"] == "host"
    # SIGTERM drains: compose waits long enough before it kills
    assert int(cloud["stop_grace_period"].removesuffix("s")) > args.drain_seconds
    gpu = cloud["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["driver"] == "nvidia" and "gpu" in gpu["capabilities"]
    assert "/health" in " ".join(cloud["healthcheck"]["test"])


def test_compose_publishes_the_app_on_loopback_unless_told_otherwise():
    """With the tls profile the key must not travel in clear: 8001 is published on 127.0.0.1
    (Caddy reaches the app over the compose network), by default and in the example."""
    example = env_file(DEPLOY / "compose.env.example")
    for env in (example, {k: v for k, v in example.items() if k != "SCOPE_CLOUD_BIND"}):
        services = compose(env)["services"]
        (published,) = services["cloud"]["ports"]
        assert published.split(":")[0] == "127.0.0.1"
        assert services["tls"]["profiles"] == ["tls"]
        assert services["tls"]["command"][-1] == "cloud:8001"
        assert set(services["tls"]["networks"]) <= set(services["cloud"]["networks"])
    # coturn may relay to the cloud container's fixed address, and that one only
    services = compose(example)["services"]
    address = services["cloud"]["networks"]["media"]["ipv4_address"]
    assert f"--allowed-peer-ip={address}" in services["coturn"]["command"]


# --- the preview workflow -------------------------------------------------------------------

def workflow() -> dict[str, Any]:
    doc = yaml.safe_load((ROOT / ".github" / "workflows" / "preview.yml").read_text())
    doc["on"] = doc.pop(True, doc.get("on"))  # YAML 1.1 reads the key `on` as true
    return doc


def steps_text(job: dict[str, Any]) -> str:
    return "\n".join(str(step.get("run", "")) + str(step.get("uses", "")) for step in job["steps"])


def test_preview_workflow_deploys_checks_comments_and_deletes():
    wf = workflow()
    assert set(wf["on"]["pull_request"]["types"]) >= {"opened", "synchronize", "reopened", "closed"}
    assert "pull_request.number" in wf["concurrency"]["group"]
    jobs = wf["jobs"]
    build, deploy, cleanup = jobs["build"], jobs["deploy"], jobs["cleanup"]
    assert "github.event.action != 'closed'" in build["if"]
    build_step = next(s for s in build["steps"] if s.get("uses", "").startswith("docker/build-push-action"))
    assert build_step["with"]["file"] == "deploy/Dockerfile" and build_step["with"]["push"] is True
    assert deploy["needs"] == "build"
    text = steps_text(deploy)
    assert "fal deploy" in text and "--app-name" in text
    path, _, app_class = wf["env"]["FAL_APP_REF"].partition("::")
    assert path == "deploy/fal/app.py"
    assert re.search(rf"^\s*class {app_class}\(fal\.App\)", (ROOT / path).read_text(), re.MULTILINE)
    assert "pull_request.number" in wf["env"]["APP_NAME"]
    e2e = next(s for s in deploy["steps"] if "scripts/e2e.sh" in str(s.get("run", "")))
    assert (ROOT / "scripts" / "e2e.sh").exists()
    assert e2e["env"]["SCOPE_CLOUD_APP_ID"] == "${{ env.APP_ID }}"
    assert deploy["env"]["APP_ID"].startswith("${{ vars.FAL_OWNER }}/scope-relay-pr-")
    assert "secrets.FAL_KEY" in e2e["env"]["SCOPE_CLOUD_API_KEY"]
    assert "secrets.FAL_KEY" in deploy["env"]["FAL_KEY"]
    assert "actions/github-script" in text and deploy["permissions"]["pull-requests"] == "write"
    assert "github.event.action == 'closed'" in cleanup["if"]
    assert 'fal apps delete "$APP_NAME"' in steps_text(cleanup)
    assert "secrets.FAL_KEY" in cleanup["env"]["FAL_KEY"]
