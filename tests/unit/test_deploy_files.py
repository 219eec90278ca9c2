"""deploy/: the Kubernetes manifests, the systemd unit, the Dockerfile and the Grafana
dashboard load and carry their required fields, and name only metrics that exist."""

from __future__ import annotations

import configparser
import json
import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import Counter, Histogram
from prometheus_client.metrics import MetricWrapperBase

from indexer import metrics

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
METRIC_RE = re.compile(r"\bindexer_[a-z0-9_]+")


def k8s_docs() -> dict[str, dict[str, Any]]:
    """Every Kubernetes document under deploy/k8s, by kind (one object per kind)."""
    out: dict[str, dict[str, Any]] = {}
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            assert doc["kind"] not in out, f"two {doc['kind']} documents"
            out[doc["kind"]] = doc
    return out


def defined_series() -> set[str]:
    """Every sample name the metrics module can expose (with the histogram/counter suffixes)."""
    names: set[str] = set()
    for obj in vars(metrics).values():
        if not isinstance(obj, MetricWrapperBase):
            continue
        base = obj._name
        if isinstance(obj, Counter):
            names |= {base, f"{base}_total", f"{base}_created"}
        elif isinstance(obj, Histogram):
            names |= {base, *(f"{base}_{s}" for s in ("bucket", "sum", "count", "created"))}
        else:
            names.add(base)
    return names


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((DEPLOY / "grafana" / "rewardsync.json").read_text())
    return data


def dashboard_exprs() -> list[str]:
    """Every PromQL expression of the dashboard: targets, annotations and variable queries."""
    dash = dashboard()
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    exprs += [a["expr"] for a in dash["annotations"]["list"] if "expr" in a]
    for var in dash["templating"]["list"]:
        query = var.get("definition", "")
        if query.startswith("label_values("):
            metric, label = query.removeprefix("label_values(").rstrip(")").split(",")
            exprs.append(f"group by ({label.strip()}) ({metric.strip()})")
    return exprs


# The process collector's series (prometheus_client, Linux) and Prometheus' own `up`;
# every scraped series also carries the target labels.
STANDARD_SERIES = {
    "process_resident_memory_bytes": set(),
    "process_virtual_memory_bytes": set(),
    "process_cpu_seconds_total": set(),
    "process_start_time_seconds": set(),
    "process_open_fds": set(),
    "process_max_fds": set(),
    "up": set(),
}
TARGET_LABELS = {"instance", "job"}
PROMQL_WORDS = {
    "sum", "max", "min", "avg", "count", "group", "topk", "bottomk", "quantile", "stddev",
    "rate", "irate", "increase", "delta", "changes", "resets", "deriv", "absent", "time",
    "histogram_quantile", "max_over_time", "min_over_time", "avg_over_time", "label_replace",
    "clamp_min", "clamp_max", "vector", "scalar", "timestamp", "abs", "round",
    "by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless",
    "bool", "offset",
}  # fmt: skip


def series_labels() -> dict[str, set[str]]:
    """Each series the code can expose, with the labels it carries (target labels included)."""
    out = {name: labels | TARGET_LABELS for name, labels in STANDARD_SERIES.items()}
    for obj in vars(metrics).values():
        if not isinstance(obj, MetricWrapperBase):
            continue
        labels = set(obj._labelnames) | TARGET_LABELS
        base = obj._name
        if isinstance(obj, Counter):
            out |= {f"{base}_total": labels, f"{base}_created": labels}
        elif isinstance(obj, Histogram):
            out |= {f"{base}_{s}": labels for s in ("sum", "count", "created")}
            out[f"{base}_bucket"] = labels | {"le"}
        else:
            out[base] = labels
    return out


def promql_problems(expr: str, known: dict[str, set[str]]) -> list[str]:
    """What an expression names that the code does not define: metrics (or functions), a
    selector's labels, grouping labels that none of its metrics carries. A tokenizer, not a
    PromQL parser: enough for the expressions deploy/ holds, and tested on planted typos."""
    problems = []
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string contents are values
    text = re.sub(r"\[[^\]]*\]", "", text)  # range windows
    used: set[str] = set()
    for name, selector in re.findall(r"\b([a-zA-Z_:][\w:]*)\s*\{([^}]*)\}", text):
        for label in re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", selector):
            if label not in known.get(name, set()):
                problems.append(f"{name} has no label {label!r}")
    text = re.sub(r"\{[^}]*\}", "", text)
    grouped: set[str] = set()
    for _, labels in re.findall(
        r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)", text
    ):
        grouped |= {g.strip() for g in labels.split(",") if g.strip()}
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    for word in re.findall(r"\b[a-zA-Z_:][\w:]*\b", text):
        if word in PROMQL_WORDS:
            continue
        if word in known:
            used.add(word)
        else:
            problems.append(f"unknown metric or function {word!r}")
    carried = set().union(*(known[m] for m in used)) if used else set()
    problems += [f"no metric here carries {g!r}" for g in sorted(grouped - carried)]
    return problems


def alert_rules() -> list[dict[str, Any]]:
    rule = k8s_docs()["PrometheusRule"]
    return [r for g in rule["spec"]["groups"] for r in g["rules"]]


def named_metrics() -> set[str]:
    """Metric names in the dashboard and the alert rules (shared with the e2e test)."""
    exprs = dashboard_exprs() + [r["expr"] for r in alert_rules()]
    return {m for e in exprs for m in METRIC_RE.findall(e)}


def test_k8s_manifests_load_with_required_fields() -> None:
    """Each manifest is YAML with apiVersion, kind and metadata.name, the kinds asked for are
    all there, and no Secret is among them (created by hand, never committed)."""
    docs = k8s_docs()
    assert set(docs) >= {
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "ServiceMonitor",
        "PrometheusRule",
        "Namespace",
        "NetworkPolicy",
        "Kustomization",
    }
    assert "Secret" not in docs
    assert "ConfigMap" not in docs  # generated from rewardsync.toml
    for kind, doc in docs.items():
        assert doc["apiVersion"], kind
        if kind != "Kustomization":
            assert doc["metadata"]["name"], kind
    listed = set(docs["Kustomization"]["resources"])
    assert listed == {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}


SECRET_ENV = "rewardsync-secrets"
SECRET_KEYS = "rewardsync-keys"
KEYS_DIR = "/etc/rewardsync-keys"


def test_k8s_deployment_runs_two_replicas_with_probes() -> None:
    """Two replicas, liveness on /healthz, readiness on /readyz, a grace period longer than
    the daemon's shutdown grace, config and secrets wired in, migrate before start."""
    docs = k8s_docs()
    dep = docs["Deployment"]["spec"]
    assert dep["replicas"] == 2
    pod = dep["template"]["spec"]
    [container] = pod["containers"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"].startswith("/readyz")
    assert pod["terminationGracePeriodSeconds"] > 10
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert {"secretRef": {"name": SECRET_ENV}} in container["envFrom"]
    assert [c["args"] for c in pod["initContainers"]] == [["migrate"]]
    assert dep["selector"]["matchLabels"].items() <= dep["template"]["metadata"]["labels"].items()
    port = container["ports"][0]["containerPort"]
    svc = docs["Service"]["spec"]
    assert svc["ports"][0]["port"] == port
    assert svc["selector"] == dep["selector"]["matchLabels"]
    assert docs["PodDisruptionBudget"]["spec"]["selector"] == dep["selector"]
    assert docs["ServiceMonitor"]["spec"]["endpoints"][0]["port"] == svc["ports"][0]["name"]
    policy = docs["NetworkPolicy"]["spec"]
    assert policy["podSelector"]["matchLabels"] == dep["selector"]["matchLabels"]
    assert [p["port"] for rule in policy["ingress"] for p in rule["ports"]] == [port]
    assert docs["Namespace"]["metadata"]["name"] == docs["Kustomization"]["namespace"]


def test_k8s_kustomization_overrides_the_image_and_generates_the_config() -> None:
    """`images:` names the image of every container; the ConfigMap comes from
    configMapGenerator (hash suffix kept, so a config change rolls the pods) and is the one
    the Deployment mounts; the keys are a Secret volume mounted read-only (group-readable,
    optional without a pusher), never environment variables."""
    docs = k8s_docs()
    kust = docs["Kustomization"]
    pod = docs["Deployment"]["spec"]["template"]["spec"]
    containers = pod["initContainers"] + pod["containers"]
    overridden = {i["name"] for i in kust["images"]}
    assert all(i.get("newTag") or i.get("newName") or i.get("digest") for i in kust["images"])
    assert {c["image"].split(":")[0] for c in containers} <= overridden
    [generator] = kust["configMapGenerator"]
    assert not kust.get("generatorOptions", {}).get("disableNameSuffixHash")
    assert generator["files"] == ["indexer.toml=rewardsync.toml"]  # the key the pods read
    assert (K8S / "rewardsync.toml").is_file()
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["config"]["configMap"]["name"] == generator["name"]
    keys = volumes["keys"]["secret"]
    assert keys == {"secretName": SECRET_KEYS, "optional": True, "defaultMode": 0o440}
    for c in containers:
        mounts = {m["name"]: m for m in c["volumeMounts"]}
        assert mounts["keys"] == {"name": "keys", "mountPath": KEYS_DIR, "readOnly": True}
        assert mounts["config"]["readOnly"] is True
        names = {e["name"] for e in c.get("env", [])}
        assert not names & {"INDEXER_SIGNER_KEY", "INDEXER_SENDER_KEY"}, c["name"]


def _secret_env() -> dict[str, str]:
    lines = (K8S / "secrets.env.example").read_text().splitlines()
    return dict(ln.split("=", 1) for ln in lines if ln and not ln.startswith("#"))


def test_k8s_config_is_valid_and_reads_its_keys_from_files(tmp_path: Path) -> None:
    """rewardsync.toml (the generated ConfigMap's indexer.toml) loads with the variables of
    secrets.env.example (the Secret's documented content: no key in it), listens on the pod's
    port, stops within the pod's grace; its commented [signer] takes both keys from files of
    the keys mount."""
    from indexer import config  # noqa: PLC0415

    docs = k8s_docs()
    env = _secret_env()
    assert not set(env) & {"INDEXER_SIGNER_KEY", "INDEXER_SENDER_KEY"}
    text = (K8S / "rewardsync.toml").read_text()
    toml = tomllib.loads(text)
    assert toml["database"]["url"] == "$DATABASE_URL"
    assert toml["service"]["metrics_listen"].endswith(":9108")
    assert (
        toml["service"]["shutdown_grace"]
        < docs["Deployment"]["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    )
    settings = config.load(K8S / "rewardsync.toml", env)
    assert settings.signer is None
    assert [c.rpc_urls for c in settings.chains] == [(env["INDEXER_RPC_URL_MAINNET"],)]

    signer = re.search(r"^# \[signer\]\n((?:# .*\n)+)", text, re.M)
    assert signer
    enabled = "[signer]\n" + re.sub(r"^# ", "", signer.group(1), flags=re.M)
    assert f'key_file = "{KEYS_DIR}/signer.key"' in enabled
    keys = tmp_path / "keys"
    keys.mkdir()
    (keys / "signer.key").write_text("0x" + "11" * 32 + "\n")
    (keys / "sender.key").write_text("0x" + "22" * 32)
    local = tmp_path / "indexer.toml"
    local.write_text(text.replace(signer.group(0), enabled).replace(KEYS_DIR, str(keys)))
    with_signer = config.load(local, env)
    assert with_signer.signer is not None
    assert with_signer.signer.key.reveal().endswith("11" * 32)
    assert with_signer.signer.sender_key is not None
    assert with_signer.signer.sender_key.reveal().endswith("22" * 32)


def test_k8s_secrets_are_documented_with_the_names_the_deployment_uses() -> None:
    """README and runbook give the commands that create both Secrets under the names the
    Deployment reads (the environment from an env file, the keys with --from-file under the
    file names rewardsync.toml's key_file lines expect), and the reason for no Helm chart."""
    readme = (ROOT / "README.md").read_text()
    runbook = (ROOT / "docs" / "runbook.md").read_text()
    toml = (K8S / "rewardsync.toml").read_text()
    files = re.findall(rf'key_file = "{KEYS_DIR}/([\w.]+)"', toml)
    assert files == ["signer.key", "sender.key"]
    for doc in (readme, runbook):
        flat = re.sub(r"\\\n\s*", "", doc)  # shell line continuations
        assert f"kubectl -n rewardsync create secret generic {SECRET_ENV} --from-env-file=" in flat
        keys = re.search(rf"create secret generic {SECRET_KEYS} (.*)", flat)
        assert keys
        assert re.findall(r"--from-file=([\w.]+)=", keys.group(1)) == files
    assert "Kustomize only, no Helm chart" in readme


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed")
def test_k8s_kustomize_renders_a_config_change_as_a_new_configmap_name(tmp_path: Path) -> None:
    """`kubectl kustomize` (offline) renders the kustomization: the Deployment mounts the
    ConfigMap by its hashed name, the image comes from `images:`, no Secret is rendered; a
    copy with one more line of configuration gets another ConfigMap name in the Deployment,
    which is what rolls the pods."""

    def render(folder: Path) -> tuple[str, list[str]]:
        out = subprocess.run(
            ["kubectl", "kustomize", str(folder)],
            capture_output=True, text=True, timeout=120, check=True,
        ).stdout  # fmt: skip
        docs = {d["kind"]: d for d in yaml.safe_load_all(out)}
        assert "Secret" not in docs
        assert docs["NetworkPolicy"]["metadata"]["namespace"] == "rewardsync"
        pod = docs["Deployment"]["spec"]["template"]["spec"]
        [volume] = [v for v in pod["volumes"] if v["name"] == "config"]
        name = docs["ConfigMap"]["metadata"]["name"]
        assert volume["configMap"]["name"] == name
        assert name.startswith("rewardsync-config-")
        return name, [c["image"] for c in pod["initContainers"] + pod["containers"]]

    name, images = render(K8S)
    [image] = k8s_docs()["Kustomization"]["images"]
    assert images == [f"{image['newName']}:{image['newTag']}"] * 2
    copy = tmp_path / "k8s"
    shutil.copytree(K8S, copy)
    with (copy / "rewardsync.toml").open("a") as f:
        f.write("# changed\n")
    changed, _ = render(copy)
    assert changed != name


def test_prometheus_rules_cover_the_required_alerts() -> None:
    """Alerts exist for lag, halted, deep reorg, RPC errors, open discrepancies and a stuck
    pusher, each with an expression, a severity and a summary."""
    rules = alert_rules()
    by_name = {r["alert"]: r for r in rules}
    for name in (
        "IndexerLagHigh",
        "IndexerHalted",
        "IndexerDeepReorg",
        "IndexerRpcErrorRate",
        "IndexerDiscrepanciesOpen",
        "IndexerPusherStuck",
        "IndexerPusherErrors",
    ):
        assert name in by_name, name
    exprs = " ".join(r["expr"] for r in rules)
    for metric in (
        "indexer_checkpoint_timestamp_seconds",
        "indexer_halted",
        "indexer_reorg_depth_blocks_bucket",
        "indexer_rpc_requests_total",
        "indexer_discrepancies_open",
        "indexer_pusher_stuck_transactions",
        "indexer_pusher_errors_total",
    ):
        assert metric in exprs, metric
    for r in rules:
        assert r["labels"]["severity"] in ("warning", "critical"), r["alert"]
        assert r["annotations"]["summary"], r["alert"]


def test_every_alert_has_a_runbook_section() -> None:
    """Each rule's runbook_url is docs/runbook.md#<alert, lowercase>, and that file has the
    section: an alert that pages someone says what to do. An IndexerDown alert exists."""
    runbook = (ROOT / "docs" / "runbook.md").read_text()
    sections = {ln[3:].strip().lower() for ln in runbook.splitlines() if ln.startswith("## ")}
    rules = alert_rules()
    assert "IndexerDown" in {r["alert"] for r in rules}
    for r in rules:
        url = r["annotations"].get("runbook_url", "")
        assert url == f"docs/runbook.md#{r['alert'].lower()}", (r["alert"], url)
        assert r["alert"].lower() in sections, r["alert"]


def test_grafana_dashboard_has_panels_with_targets() -> None:
    """The dashboard is JSON with unique panel ids, and every non-row panel has a target
    for each asked-for view."""
    dash = dashboard()
    assert dash["uid"]
    assert dash["title"]
    panels = dash["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    for p in panels:
        if p["type"] != "row":
            assert p["targets"], p
            assert all(t["expr"] and t["refId"] for t in p["targets"]), p
    exprs = " ".join(dashboard_exprs())
    for metric in (
        "indexer_head_block",
        "indexer_checkpoint_block",
        "indexer_lag_blocks",
        "indexer_events_written_total",
        "indexer_reorgs_total",
        "indexer_reorg_depth_blocks_bucket",
        "indexer_rpc_request_seconds_bucket",
        "indexer_rpc_endpoint_errors_total",
        "indexer_batch_commit_seconds_bucket",
        "indexer_discrepancies_open",
        "indexer_pusher_queue_rewards",
    ):
        assert metric in exprs, metric


def test_every_dashboard_and_rule_expression_names_defined_series_and_labels() -> None:
    """Each expression of the dashboard (panels, annotations, the chain variable) and of the
    alert rules names only series that indexer/metrics.py (or the process collector) exposes,
    selects and groups by labels they carry; the dashboard takes every rate over
    $__rate_interval. A planted typo is caught (the checker is not vacuous)."""
    known = series_labels()
    for expr in dashboard_exprs() + [r["expr"] for r in alert_rules()]:
        assert promql_problems(expr, known) == [], expr
    for expr in dashboard_exprs():
        for window in re.findall(
            r"\b(?:rate|irate|increase|[a-z]+_over_time)\([^\[]*\[([^\]]*)\]", expr
        ):
            assert window == "$__rate_interval", expr
    assert promql_problems('sum by (chian) (rate(indexer_reorgs_total{chain="x"}[5m]))', known) == [
        "no metric here carries 'chian'"
    ]
    assert promql_problems('indexer_halted{endpoint="0"} + indexer_lag', known) == [
        "indexer_halted has no label 'endpoint'",
        "unknown metric or function 'indexer_lag'",
    ]


def test_dashboard_panels_have_one_unit_and_the_asked_for_views() -> None:
    """Every panel states its unit (one per panel: all its queries share it); halted shows red;
    reconcile age and discrepancies, pusher batches and gas, endpoint health, process memory
    have panels; reorgs are annotations; the compose stack mounts this very file."""
    dash = dashboard()
    panels = [p for p in dash["panels"] if p["type"] != "row"]
    by_metric: dict[str, dict[str, Any]] = {}
    for p in panels:
        unit = p["fieldConfig"]["defaults"].get("unit")
        assert unit, p["title"]
        assert not p["fieldConfig"].get("overrides"), p["title"]  # no second unit sneaks in
        for t in p["targets"]:
            for m in set(METRIC_RE.findall(t["expr"])) | set(re.findall(r"process_\w+", t["expr"])):
                by_metric[m] = p
    halted = by_metric["indexer_halted"]["fieldConfig"]["defaults"]
    assert {"color": "red", "value": 1} in halted["thresholds"]["steps"]
    expected_units = {
        "indexer_reconcile_last_run_timestamp_seconds": "s",
        "indexer_discrepancies_open": "none",
        "indexer_reconcile_mismatches_total": "none",
        "indexer_pusher_batches": "none",
        "indexer_pusher_gas_used_total": "short",
        "indexer_pusher_sender_balance": "none",
        "indexer_rpc_endpoint_up": "none",
        "indexer_rpc_endpoint_head_lag_blocks": "none",
        "indexer_rpc_endpoint_request_seconds_bucket": "s",
        "indexer_rpc_endpoint_errors_total": "ops",
        "process_resident_memory_bytes": "bytes",
        "indexer_checkpoint_timestamp_seconds": "s",
        "indexer_pusher_oldest_pending_seconds": "s",
    }
    for metric, unit in expected_units.items():
        assert by_metric[metric]["fieldConfig"]["defaults"]["unit"] == unit, metric
    [reorgs] = [
        a for a in dash["annotations"]["list"] if "indexer_reorgs_total" in a.get("expr", "")
    ]
    assert reorgs["enable"]
    assert re.search(
        r"increase\(indexer_reorgs_total\{[^}]*\}\[\$__rate_interval\]\)\) > 0", reorgs["expr"]
    )
    compose = yaml.safe_load((COMPOSE / "compose.yaml").read_text())
    mounts = [v.split(":")[0] for v in compose["services"]["grafana"]["volumes"]]
    dashboards = [m for m in mounts if m.endswith(".json")]
    assert [(COMPOSE / m).resolve() for m in dashboards] == [DEPLOY / "grafana" / "rewardsync.json"]


def test_deploy_metric_names_exist_in_metrics_module() -> None:
    """Every indexer_* name in the dashboard and the alert rules is a series that
    indexer/metrics.py defines."""
    names = named_metrics()
    assert len(names) > 15
    assert names <= defined_series(), sorted(names - defined_series())


def test_systemd_unit_is_hardened_and_restarts() -> None:
    """The unit restarts on failure, runs unprivileged and sandboxed, reads secrets from an
    EnvironmentFile, migrates before start and waits longer than the shutdown grace."""
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read_string((DEPLOY / "systemd" / "rewardsync.service").read_text())
    svc = unit["Service"]
    assert svc["Restart"] == "on-failure"
    assert svc.get("DynamicUser") == "yes" or svc.get("User")
    for key in ("ProtectSystem", "NoNewPrivileges", "PrivateTmp"):
        assert svc[key] in ("yes", "strict"), key
    assert svc["ProtectSystem"] == "strict"
    assert svc["EnvironmentFile"]
    assert svc["ExecStartPre"].endswith(" migrate")
    assert svc["ExecStart"].endswith(" run")
    assert int(svc["TimeoutStopSec"]) > 10
    assert svc["MemoryMax"].endswith("G")
    assert "LoadCredential=signer.key:" in (DEPLOY / "systemd" / "rewardsync.service").read_text()
    assert unit["Install"]["WantedBy"] == "multi-user.target"


def test_dockerfile_installs_the_wheel_as_non_root() -> None:
    """Two stages on python:3.11-slim: the wheel built from the tree, then installed into a
    clean image (its package data holds schema.sql and the ABIs), run as a non-root user."""
    text = (DEPLOY / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim AS build\b", text, re.M)
    assert len(re.findall(r"^FROM python:3\.11-slim\b", text, re.M)) == 2
    assert "pip wheel --no-deps -w /dist ." in text
    assert "pip install --compile /dist/*.whl" in text
    for path in ("indexer/", "pyproject.toml"):
        assert re.search(rf"^COPY .*\b{re.escape(path)}", text, re.M), path
    assert "COPY --from=build /dist/" in text
    user = re.findall(r"^USER (\S+)", text, re.M)
    assert user
    assert not user[-1].startswith(("root", "0"))
    assert 'ENTRYPOINT ["indexer"' in text


def test_example_config_states_every_key() -> None:
    """deploy/indexer.example.toml names every key of every section (set or commented out)."""
    from indexer import config, watchlist  # noqa: PLC0415

    text = (DEPLOY / "indexer.example.toml").read_text()
    sections = {
        "service": config._SERVICE_KEYS,
        "chains": tuple(k for k in config._CHAIN_KEYS if k != "contracts"),
        "signer": config._SIGNER_KEYS,
        "api": config._API_KEYS,
        "contracts": watchlist._CONTRACT_KEYS,
    }
    for section, keys in sections.items():
        for key in keys:
            assert re.search(rf"^[#\s]*{key}\s*=", text, re.M), f"{section}.{key}"


COMPOSE = DEPLOY / "compose"


def test_compose_stack_is_consistent() -> None:
    """deploy/compose: the five services, a health check on each long-running one, every named
    volume declared, every ${VAR} in .env.example, every bind-mounted file present, Prometheus
    scraping the indexer's metrics port under the job the alerts name, the rules equal to the
    PrometheusRule's, and the indexer's configuration valid with the stack's environment.
    (Static only: no container engine runs here.)"""
    doc = yaml.safe_load((COMPOSE / "compose.yaml").read_text())
    services = doc["services"]
    assert set(services) == {"postgres", "migrate", "indexer", "prometheus", "grafana"}
    for name, svc in services.items():
        if name != "migrate":
            assert "healthcheck" in svc, name
        for volume in svc.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("."):
                assert (COMPOSE / source).resolve().exists(), (name, source)
            else:
                assert source in doc["volumes"], (name, source)
    env_file = (COMPOSE / ".env.example").read_text()
    defined = {ln.split("=", 1)[0] for ln in env_file.splitlines() if "=" in ln}
    used = set(re.findall(r"\$\{(\w+)", (COMPOSE / "compose.yaml").read_text()))
    assert used <= defined, used - defined

    prom = yaml.safe_load((COMPOSE / "prometheus" / "prometheus.yml").read_text())
    (job,) = prom["scrape_configs"]
    assert job["job_name"] == "rewardsync-metrics"  # what IndexerDown's up{job=...} names
    (target,) = job["static_configs"][0]["targets"]
    host, port = target.split(":")
    assert host == "indexer"
    assert f"127.0.0.1:{port}:{port}" in services["indexer"]["ports"]

    rules = yaml.safe_load((COMPOSE / "prometheus" / "rules.yaml").read_text())
    crd = yaml.safe_load((DEPLOY / "k8s" / "prometheusrule.yaml").read_text())
    assert rules["groups"] == crd["spec"]["groups"]

    from indexer import config  # noqa: PLC0415

    env = dict.fromkeys(defined, "x") | {
        "DATABASE_URL": "postgresql://indexer:pw@postgres:5432/rewards",
        "INDEXER_RPC_URL_MAINNET": "https://mainnet.example/v3/key",
    }
    assert set(services["indexer"]["environment"]) <= set(env)
    settings = config.load(COMPOSE / "rewardsync.toml", env)
    assert settings.service.metrics_listen == ("0.0.0.0", int(port))
    assert settings.chains[0].rpc_urls == ("https://mainnet.example/v3/key",)


def test_docs_name_only_tests_that_exist() -> None:
    """Every `tests/…py::name` (or `test_x.py::name`) the docs cite is a test function of that
    file (docs that point at a renamed test would prove nothing)."""
    cited = 0
    for doc in [*(ROOT / "docs").glob("*.md"), ROOT / "README.md"]:
        for path, name in re.findall(r"`((?:tests/[\w/]+/)?test_\w+\.py)::(\w+)", doc.read_text()):
            files = [ROOT / path] if "/" in path else list((ROOT / "tests").rglob(path))
            assert len(files) == 1, (doc.name, path)
            source = files[0].read_text()
            assert re.search(rf"^(async )?def {name}\b", source, re.M), (doc.name, path, name)
            cited += 1
    assert cited >= 20


def test_the_module_map_names_every_module() -> None:
    """docs/architecture.md lists every module of the package (``demo/`` as one row), and no
    module that is gone."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    table = text[text.index("## Module map") : text.index("## The path of one log")]
    named = set(re.findall(r"`(\w+\.py)`", table))
    modules = {
        str(p.relative_to(ROOT / "indexer"))
        for p in (ROOT / "indexer").rglob("*.py")
        if p.name not in ("__init__.py", "__main__.py") and "demo" not in p.parts
    }
    assert modules <= named, sorted(modules - named)
    assert named <= modules, sorted(named - modules)
