#!/usr/bin/env python3
"""Gateway API conformance (v1.5.1, GATEWAY-HTTP profile) for kgw, from the language-neutral
corpus (../shared/conformance/gateway-api: README.md, SCHEMA.md, echo-basic.md, base/, tests/,
cases/), read in place.

It stands in for the cluster: starts `kgw run` (own state dir, admin address, Gateway address
pool on loopback), the echo backend emulator (echo.py: every backend pod on its own loopback
address), applies the base manifests with `kgw apply` (the Deployments are the emulator; the
runner writes the EndpointSlices a Service's selector would get), the generated Secrets and
ConfigMaps, then runs every case whose features the GatewayClass claims
(status.supportedFeatures), each with its manifests applied before and deleted after. Writes a
ConformanceReport (YAML), a Markdown table, and prints the table. Exit 1 when a Core test or a
test of a claimed feature fails.

  runner.py [--kgw PATH] [--corpus DIR] [--only A,B] [--all] [--report PATH] [--self-check]
"""

import argparse
import concurrent.futures
import copy
import ipaddress
import json
import os
import random
import re
import secrets
import shutil
import signal
import socket
import string
import subprocess
import sys
import threading
import time
import traceback
import urllib.error
import urllib.request
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import certs  # noqa: E402
import httpclient  # noqa: E402
from httpclient import TransportError  # noqa: E402

REPO = HERE.parents[3]
GATEWAY_CLASS = "kgateway"
CONTROLLER = "kgateway.dev/kgateway"
CORE_FEATURES = {"Gateway", "HTTPRoute", "ReferenceGrant"}
CONFORMANCE_NAMESPACES = ["gateway-conformance-infra", "gateway-conformance-app-backend",
                          "gateway-conformance-web-backend"]
GATEWAY_API_VERSION = "v1.5.1"
# The echo pods (echo-basic.md "Emulating it in a harness"): 2 per HTTP backend, 1 per TLS one.
BACKENDS = [
    ("gateway-conformance-infra", "infra-backend-v1", 2, None),
    ("gateway-conformance-infra", "infra-backend-v2", 2, None),
    ("gateway-conformance-infra", "infra-backend-v3", 2, None),
    ("gateway-conformance-infra", "tls-backend", 1, "tls-checks-certificate"),
    ("gateway-conformance-infra", "tls-backend-2", 1, "tls-checks-certificate"),
    ("gateway-conformance-app-backend", "app-backend-v1", 2, None),
    ("gateway-conformance-app-backend", "app-backend-v2", 2, None),
    ("gateway-conformance-app-backend", "tls-backend", 1, "tls-passthrough-checks-certificate"),
    ("gateway-conformance-web-backend", "web-backend", 2, None),
]
CLUSTER_SCOPED = {"GatewayClass", "Namespace"}


class Timeouts:
    """Upstream config.DefaultTimeoutConfig; the status waits scaled by --timeout-scale."""

    def __init__(self, scale, consistency):
        self.consistency = consistency  # MaxTimeToConsistency
        self.status = 60.0 * scale  # route/listener/class status waits
        self.gateway = 180.0 * scale  # Gateway condition / address waits
        self.mirror = 10.0 * scale
        self.required_successes = 3
        self.poll = 0.1


class StepFailed(Exception):
    pass


def log(msg):
    print(msg, flush=True)


# ---------------------------------------------------------------------------------------------
# kgw: the process, and its CLI / admin API as a cluster's API server


class Kgw:
    def __init__(self, binary, workdir, pool, verbose):
        self.binary = binary
        self.workdir = workdir
        self.pool = pool
        self.verbose = verbose
        self.admin = f"127.0.0.1:{free_port()}"
        self.proc = None
        self.warnings = []

    def start(self):
        state = self.workdir / "state"
        shutil.rmtree(state, ignore_errors=True)
        self.log_path = self.workdir / "kgw.log"
        args = [self.binary, "run", "--state-dir", str(state), "--admin-address", self.admin,
                "--access-log", str(self.workdir / "access.log"), "--gateway-address-pool", self.pool]
        self.proc = self._spawn(args)
        if not self._wait_admin():
            out = self.log_path.read_text(errors="replace")
            if "gateway-address-pool" in out and self.proc.poll() is not None:
                self.warnings.append(
                    "kgw run does not take --gateway-address-pool yet: Gateways get no status.addresses, so "
                    "every test that waits for a Gateway address fails")
                self.proc = self._spawn(args[:-2])
                if self._wait_admin():
                    return
            raise SystemExit(f"kgw run did not start (admin {self.admin}); its output:\n{self.log_path.read_text()}")

    def _spawn(self, args):
        out = open(self.log_path, "w")
        return subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def _wait_admin(self):
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                with socket.create_connection(tuple(self.admin.rsplit(":", 1)), timeout=1):
                    return True
            except OSError:
                time.sleep(0.05)
        return False

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def cli(self, *args, stdin=None):
        """Runs `kgw ARGS --server ADMIN`: (ok, combined output)."""
        r = subprocess.run([self.binary, *args, "--server", self.admin], input=stdin, capture_output=True,
                           text=True, timeout=60)
        out = (r.stdout + r.stderr).strip()
        if self.verbose:
            log(f"    $ kgw {' '.join(args)} -> {r.returncode}: {out[:300]}")
        return r.returncode == 0, out

    def apply(self, text, origin):
        path = self.workdir / "manifests" / origin
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return self.cli("apply", "-f", str(path))

    def delete_file(self, path):
        return self.cli("delete", "-f", str(path))

    def get(self, kind, namespace, name):
        """The object as `kgw get KIND NAME -n NS -o json` shows it (the admin API it calls), or None."""
        url = f"http://{self.admin}/apis/{kind.lower()}/{namespace or ''}/{name}"
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                items = json.loads(r.read()).get("items") or []
        except urllib.error.HTTPError:
            return None
        except (urllib.error.URLError, OSError, ValueError) as e:
            raise StepFailed(f"cannot read {kind} {namespace}/{name} from kgw's admin API: {e}") from None
        return items[0] if items else None

    def list(self, kind, namespace):
        url = f"http://{self.admin}/apis/{kind.lower()}/{namespace}/"
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                return json.loads(r.read()).get("items") or []
        except urllib.error.HTTPError:
            return []

    def patch(self, kind, namespace, name, patch):
        args = ["patch", kind.lower(), name, "--type", "merge", "-p", json.dumps(patch)]
        if kind not in CLUSTER_SCOPED:
            args += ["-n", namespace]
        return self.cli(*args)

    def delete(self, kind, namespace, name):
        args = ["delete", kind.lower(), name]
        if kind not in CLUSTER_SCOPED:
            args += ["-n", namespace]
        return self.cli(*args)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------------------------
# The backend pods (echo.py) and the objects a cluster would make for them


class Pods:
    def __init__(self, workdir, pod_net, secrets_data):
        self.workdir = workdir
        self.pods = []  # {name, namespace, app, ip, cert?, key?}
        net = ipaddress.ip_network(pod_net)
        hosts = net.hosts()
        for ns, app, replicas, secret in BACKENDS:
            for _ in range(replicas):
                pod = {"name": pod_name(app), "namespace": ns, "app": app, "ip": str(next(hosts))}
                if secret:
                    data = secrets_data[(ns, secret)]
                    cert = workdir / "pki" / f"{ns}_{secret}.crt"
                    key = workdir / "pki" / f"{ns}_{secret}.key"
                    cert.parent.mkdir(parents=True, exist_ok=True)
                    cert.write_text(data["tls.crt"])
                    key.write_text(data["tls.key"])
                    pod["cert"], pod["key"] = str(cert), str(key)
                self.pods.append(pod)
        self.log_dir = workdir / "pod-logs"
        self.proc = None

    def start(self):
        shutil.rmtree(self.log_dir, ignore_errors=True)
        spec = self.workdir / "pods.json"
        spec.write_text(json.dumps(self.pods, indent=1))
        out = open(self.workdir / "echo.log", "w")
        self.proc = subprocess.Popen([sys.executable, str(HERE / "echo.py"), "--pods", str(spec), "--log-dir",
                                      str(self.log_dir)], stdout=subprocess.PIPE, stderr=out, text=True)
        line = self.proc.stdout.readline()
        if line.strip() != "ready":
            raise SystemExit(f"the echo backend did not start: {(self.workdir / 'echo.log').read_text()}")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def selected(self, namespace, selector):
        return [p for p in self.pods if p["namespace"] == namespace and selector.get("app") == p["app"]
                and set(selector) == {"app"}]

    def of(self, namespace, app):
        return [p for p in self.pods if p["namespace"] == namespace and p["app"] == app]

    def log_count(self, namespace, app, pattern, since):
        """Lines of the app's pods' logs written since `since` (epoch) that match `pattern`."""
        n = 0
        for p in self.of(namespace, app):
            path = self.log_dir / f"{namespace}_{p['name']}.log"
            if not path.exists():
                continue
            for line in path.read_text().splitlines():
                ts, _, text = line.partition(" ")
                if float(ts) >= since and pattern.search(text):
                    n += 1
        return n


def pod_name(app):
    hexpart = "".join(random.choice("0123456789abcdef") for _ in range(10))
    alnum = "".join(random.choice(string.ascii_lowercase + string.digits) for _ in range(5))
    return f"{app}-{hexpart}-{alnum}"


def endpoint_slices(objects, pods):
    """The EndpointSlices Kubernetes' controller would write for the Services with a selector among
    `objects`: one per Service, its pods' addresses, ports = the Service ports' target ports."""
    out = []
    for o in objects:
        if o.get("kind") != "Service" or not (o.get("spec") or {}).get("selector"):
            continue
        ns = o["metadata"].get("namespace", "default")
        selected = pods.selected(ns, o["spec"]["selector"])
        if not selected:
            continue
        ports = []
        for p in o["spec"].get("ports") or []:
            port = {"port": int(p.get("targetPort", p["port"])), "protocol": p.get("protocol", "TCP")}
            if p.get("name"):
                port["name"] = p["name"]
            if p.get("appProtocol"):
                port["appProtocol"] = p["appProtocol"]
            ports.append(port)
        out.append({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": f"{o['metadata']['name']}-pods", "namespace": ns,
                         "labels": {"kubernetes.io/service-name": o["metadata"]["name"]}},
            "addressType": "IPv4",
            "endpoints": [endpoint(p) for p in selected],
            "ports": ports,
        })
    return out


def endpoint(pod):
    return {"addresses": [pod["ip"]], "conditions": {"ready": True, "serving": True, "terminating": False},
            "targetRef": {"kind": "Pod", "name": pod["name"], "namespace": pod["namespace"]}}


# ---------------------------------------------------------------------------------------------
# Manifests: templating as the suite's Applier, applied with kgw


def split_documents(text):
    return [d for d in re.split(r"(?m)^---[ \t]*$", text) if yaml.safe_load(d)]


class Templater:
    def __init__(self, usable, unusable):
        self.usable = usable
        self.unusable = unusable

    def render(self, text, drop_kinds=()):
        """(manifest text, [objects]) of a corpus manifest, templated; `drop_kinds` left out."""
        docs, objects = [], []
        for doc in split_documents(text):
            obj = yaml.safe_load(doc)
            if obj.get("kind") in drop_kinds:
                continue
            doc = doc.replace("{GATEWAY_CLASS_NAME}", GATEWAY_CLASS).replace("{GATEWAY_CONTROLLER_NAME}", CONTROLLER)
            obj = yaml.safe_load(doc)
            if obj.get("kind") == "Gateway" and (obj.get("spec") or {}).get("addresses"):
                changed = False
                for a in obj["spec"]["addresses"]:
                    if a.get("value") == "PLACEHOLDER_USABLE_ADDRS":
                        a.update(self.usable)
                        changed = True
                    elif a.get("value") == "PLACEHOLDER_UNUSABLE_ADDRS":
                        a.update(self.unusable)
                        changed = True
                if changed:
                    doc = "\n" + yaml.safe_dump(obj, sort_keys=False)
            docs.append(doc.strip("\n") + "\n")
            objects.append(obj)
        return "---\n".join(docs), objects


# ---------------------------------------------------------------------------------------------
# Status helpers (SCHEMA.md's ops)


def conditions(obj):
    return ((obj or {}).get("status") or {}).get("conditions") or []


def generation(obj):
    return ((obj or {}).get("metadata") or {}).get("generation", 0) or 0


def stale(obj, conds):
    gen = generation(obj)
    return [c for c in conds if (c.get("observedGeneration", 0) or 0) != gen]


def has_condition(conds, want):
    for c in conds:
        if c.get("type") == want["type"] and c.get("status") == want["status"] and \
                (not want.get("reason") or c.get("reason") == want["reason"]):
            return True
    return False


def show_conditions(conds):
    if not conds:
        return "no conditions"
    return "; ".join(f"{c.get('type')}={c.get('status')} ({c.get('reason')}, observedGeneration "
                     f"{c.get('observedGeneration')})" for c in conds)


def show(obj, path="status"):
    if obj is None:
        return "the object does not exist"
    v = obj.get(path) if path else obj
    return json.dumps(v, sort_keys=True)[:1500] if v is not None else f"no {path}"


def ref_str(r):
    return f"{r.get('namespace', '')}/{r['name']}" if r.get("namespace") else r["name"]


# ---------------------------------------------------------------------------------------------
# One test


class TestRun:
    def __init__(self, env, case):
        self.env = env
        self.case = case
        self.kgw = env.kgw
        self.t = env.timeouts
        self.vars = {}
        self.generations = {}
        self.remembered_addresses = {}
        self.failures = []  # (subtest path, message)
        self.notes = []

    # -- helpers

    def fail(self, msg):
        raise StepFailed(msg)

    def poll(self, what, timeout, check):
        """Calls check() (returns (ok, detail)) every poll interval until ok or timeout; fails with
        the last detail."""
        deadline = time.monotonic() + timeout
        detail = ""
        while True:
            try:
                ok, detail = check()
            except StepFailed as e:
                ok, detail = False, str(e)
            if ok:
                return detail
            if time.monotonic() >= deadline:
                self.fail(f"{what}: not reached within {timeout:.0f} s; last seen: {detail}")
            time.sleep(self.t.poll)

    def get(self, kind, ref):
        return self.kgw.get(kind, ref.get("namespace"), ref["name"])

    # -- ops

    def op_namespaces_ready(self, step):
        def check():
            # The pods' readiness: the echo process (every pod) is alive.
            if self.env.pods.proc.poll() is not None:
                return False, (f"the echo backend (every pod) exited with {self.env.pods.proc.returncode}; see "
                               f"{self.env.workdir / 'echo.log'}")
            for ns in step["namespaces"]:
                for gw in self.kgw.list("gateway", ns):
                    ann = (gw["metadata"].get("annotations") or {})
                    if ann.get("gateway-api/skip-this-for-readiness") == "true":
                        continue
                    conds = conditions(gw)
                    name = f"Gateway {ns}/{gw['metadata']['name']}"
                    if stale(gw, conds):
                        return False, f"{name}: conditions not at generation {generation(gw)}: {show_conditions(conds)}"
                    for t in ("Accepted", "Programmed"):
                        if not has_condition(conds, {"type": t, "status": "True"}):
                            return False, f"{name}: no {t}=True: {show_conditions(conds)}"
            return True, ""
        self.poll("namespaces ready (every Gateway Accepted and Programmed)", self.t.status * 5, check)

    def gateway_address(self, gw_ref, listener, use_port):
        def check():
            gw = self.get("gateway", gw_ref)
            if gw is None:
                return False, "the Gateway does not exist"
            if stale(gw, conditions(gw)):
                return False, f"conditions not at generation {generation(gw)}: {show_conditions(conditions(gw))}"
            addrs = [a for a in (gw.get("status") or {}).get("addresses") or [] if a.get("type")]
            if not addrs:
                return False, f"no status.addresses entry with a type; status: {show(gw)}"
            return True, (gw, addrs[0]["value"])
        gw, host = self.poll(f"Gateway {ref_str(gw_ref)} address", self.t.gateway, check)
        if not use_port:
            return host
        listeners = gw["spec"]["listeners"]
        if listener:
            port = next((ls["port"] for ls in listeners if ls["name"] == listener), None)
            if port is None:
                self.fail(f"Gateway {ref_str(gw_ref)} has no listener {listener!r}")
        else:
            port = listeners[0]["port"]
        return httpclient.join_host_port(host, port)

    def op_gateway_and_routes_accepted(self, step):
        gw_ref = step["gateway"]
        listeners = step.get("listeners")
        address = self.gateway_address(gw_ref, listeners[0] if listeners else None, step.get("use_port", True))
        if step.get("address_as"):
            self.vars[step["address_as"]] = address
        for route in step.get("routes") or []:
            def check(route=route):
                obj = self.get("httproute", route)
                if obj is None:
                    return False, "the HTTPRoute does not exist"
                parents = (obj.get("status") or {}).get("parents") or []
                for p in parents:
                    if stale(obj, p.get("conditions") or []):
                        return False, f"parent conditions not at generation {generation(obj)}: {show(obj)}"
                for _section in listeners or [None]:
                    found = False
                    for p in parents:
                        pr = p.get("parentRef") or {}
                        ns_ok = pr.get("namespace") == gw_ref["namespace"] or (
                            not pr.get("namespace") and route["namespace"] == gw_ref["namespace"])
                        if p.get("controllerName") == CONTROLLER and pr.get("group", "gateway.networking.k8s.io") \
                                == "gateway.networking.k8s.io" and pr.get("kind", "Gateway") == "Gateway" \
                                and pr.get("name") == gw_ref["name"] and ns_ok and has_condition(
                                    p.get("conditions") or [], {"type": "Accepted", "status": "True", "reason": "Accepted"}):
                            found = True
                    if not found:
                        return False, (f"no parent {ref_str(gw_ref)} with controllerName {CONTROLLER} and "
                                       f"Accepted=True/Accepted; status: {show(obj)}")
                return True, ""
            self.poll(f"HTTPRoute {ref_str(route)} accepted by Gateway {ref_str(gw_ref)}", self.t.status, check)

        def listeners_ok():
            gw = self.get("gateway", gw_ref)
            for ls in (gw.get("status") or {}).get("listeners") or []:
                for t in ("ResolvedRefs", "Accepted", "Programmed"):
                    if not has_condition(ls.get("conditions") or [], {"type": t, "status": "True"}):
                        return False, f"listener {ls.get('name')}: no {t}=True: {show_conditions(ls.get('conditions'))}"
            return True, ""
        self.poll(f"Gateway {ref_str(gw_ref)} listeners ResolvedRefs, Accepted and Programmed", self.t.status,
                  listeners_ok)

    def op_wait_gateway_address(self, step):
        addr = self.gateway_address(step["gateway"], step.get("listener"), not step.get("strip_port"))
        if step.get("address_as"):
            self.vars[step["address_as"]] = addr

    def op_route_condition(self, step):
        gw = step["gateway"]
        want = step["condition"]

        def check():
            obj = self.get("httproute", step["route"])
            if obj is None:
                return False, "the HTTPRoute does not exist"
            parents = (obj.get("status") or {}).get("parents") or []
            for p in parents:
                if stale(obj, p.get("conditions") or []):
                    return False, f"parent conditions not at generation {generation(obj)}: {show(obj)}"
            for p in parents:
                pr = p.get("parentRef") or {}
                if pr.get("name") == gw["name"] and pr.get("namespace") in (None, "", gw["namespace"]) and \
                        has_condition(p.get("conditions") or [], want):
                    return True, ""
            return False, show(obj)
        self.poll(f"HTTPRoute {ref_str(step['route'])} condition {want['type']}={want['status']}"
                  f"{' (' + want['reason'] + ')' if want.get('reason') else ''} for Gateway {ref_str(gw)}",
                  self.t.status, check)

    def op_route_parents(self, step):
        def check():
            obj = self.get("httproute", step["route"])
            if obj is None:
                return False, "the HTTPRoute does not exist"
            actual = (obj.get("status") or {}).get("parents") or []
            for want in step["parents"]:
                wr = want["parent_ref"]
                ok = False
                for p in actual:
                    pr = p.get("parentRef") or {}
                    ns_ok = pr.get("namespace") == wr.get("namespace") or (
                        not step.get("namespace_required") and not pr.get("namespace"))
                    if p.get("controllerName") == want["controller_name"].replace("{CONTROLLER_NAME}", CONTROLLER) \
                            and pr.get("group", "gateway.networking.k8s.io") == wr.get("group", "gateway.networking.k8s.io") \
                            and pr.get("kind", "Gateway") == wr.get("kind", "Gateway") and pr.get("name") == wr["name"] \
                            and ns_ok and all(has_condition(p.get("conditions") or [], c) for c in want.get("conditions") or []):
                        ok = True
                if not ok:
                    return False, f"no parent matching {json.dumps(want)}; status: {show(obj)}"
            return True, ""
        self.poll(f"HTTPRoute {ref_str(step['route'])} parents", self.t.status, check)

    def op_route_no_accepted_parents(self, step):
        deadline = time.monotonic() + self.t.status
        empty_polls = 0
        last = ""
        while time.monotonic() < deadline:
            obj = self.get("httproute", step["route"])
            parents = ((obj or {}).get("status") or {}).get("parents") or []
            last = show(obj)
            if not parents:
                empty_polls += 1
                if empty_polls >= 2:
                    return
            else:
                empty_polls = 0
                if len(parents) == 1 and not stale(obj, parents[0].get("conditions") or []) and has_condition(
                        parents[0].get("conditions") or [], {"type": "Accepted", "status": "False"}):
                    return
            time.sleep(1)
        self.fail(f"HTTPRoute {ref_str(step['route'])}: expected no parents or one with Accepted=False within "
                  f"{self.t.status:.0f} s; last seen: {last}")

    def op_route_latest_conditions(self, step):
        def check():
            obj = self.get("httproute", step["route"])
            for p in ((obj or {}).get("status") or {}).get("parents") or []:
                if stale(obj, p.get("conditions") or []):
                    return False, show(obj)
            return obj is not None, show(obj)
        self.poll(f"HTTPRoute {ref_str(step['route'])} conditions at the latest generation", self.t.status, check)

    def op_gateway_latest_conditions(self, step):
        def check():
            obj = self.get("gateway", step["gateway"])
            return obj is not None and not stale(obj, conditions(obj)), \
                f"generation {generation(obj)}: {show_conditions(conditions(obj))}"
        self.poll(f"Gateway {ref_str(step['gateway'])} conditions at the latest generation", self.t.gateway, check)

    def op_gatewayclass_latest_conditions(self, step):
        def check():
            obj = self.kgw.get("gatewayclass", None, step["gatewayclass"])
            return obj is not None and not stale(obj, conditions(obj)), \
                f"generation {generation(obj)}: {show_conditions(conditions(obj))}"
        self.poll(f"GatewayClass {step['gatewayclass']} conditions at the latest generation", self.t.status, check)

    def op_gateway_zero_routes(self, step):
        def check():
            obj = self.get("gateway", step["gateway"])
            if obj is None or stale(obj, conditions(obj)):
                return False, show(obj)
            ls = (obj.get("status") or {}).get("listeners") or []
            return not ls or (len(ls) == 1 and ls[0].get("attachedRoutes", 0) == 0), show(obj)
        try:
            self.poll(f"Gateway {ref_str(step['gateway'])} has zero routes", self.t.status, check)
        except StepFailed as e:
            # Upstream only logs this one.
            self.notes.append(f"(logged, not failed, as upstream) {e}")

    def op_gateway_listeners_status(self, step):
        want = step["listeners"]

        def check():
            obj = self.get("gateway", step["gateway"])
            if obj is None:
                return False, "the Gateway does not exist"
            if stale(obj, conditions(obj)):
                return False, f"conditions not at generation {generation(obj)}: {show(obj)}"
            actual = (obj.get("status") or {}).get("listeners") or []
            if len(actual) != len(want):
                return False, f"expected {len(want)} listeners, got {len(actual)}: {show(obj)}"
            for w in want:
                a = next((x for x in actual if x.get("name") == w["name"]), None)
                if a is None:
                    return False, f"no listener {w['name']!r} in status: {show(obj)}"
                kinds = a.get("supportedKinds") or []
                if not w.get("supported_kinds"):
                    if kinds:
                        return False, f"listener {w['name']}: expected no supportedKinds, got {kinds}"
                else:
                    for k in w["supported_kinds"]:
                        if not any(x.get("kind") == k["kind"] and x.get("group", "gateway.networking.k8s.io") ==
                                   (k.get("group") or "gateway.networking.k8s.io") for x in kinds):
                            return False, f"listener {w['name']}: supportedKinds {kinds} lacks {k}"
                if a.get("attachedRoutes") != w.get("attached_routes"):
                    return False, (f"listener {w['name']}: attachedRoutes {a.get('attachedRoutes')}, expected "
                                   f"{w.get('attached_routes')}")
                for c in w.get("conditions") or []:
                    if not has_condition(a.get("conditions") or [], c):
                        return False, (f"listener {w['name']}: no {c['type']}={c['status']} {c.get('reason') or ''}: "
                                       f"{show_conditions(a.get('conditions'))}")
            return True, ""
        self.poll(f"Gateway {ref_str(step['gateway'])} listeners status", self.t.status, check)

    def op_gateway_listener_conditions(self, step):
        def check():
            obj = self.get("gateway", step["gateway"])
            ls = next((x for x in ((obj or {}).get("status") or {}).get("listeners") or []
                       if x.get("name") == step["listener"]), None)
            if ls is None:
                return False, f"no listener {step['listener']!r} in status: {show(obj)}"
            for c in step["conditions"]:
                if not has_condition(ls.get("conditions") or [], c):
                    return False, f"no {c['type']}={c['status']} {c.get('reason') or ''}: {show_conditions(ls.get('conditions'))}"
            return True, ""
        self.poll(f"Gateway {ref_str(step['gateway'])} listener {step['listener']} conditions", self.t.status, check)

    def op_gateway_condition(self, step):
        want = step["condition"]

        def check():
            obj = self.get("gateway", step["gateway"])
            if obj is None:
                return False, "the Gateway does not exist"
            conds = conditions(obj)
            if stale(obj, conds):
                return False, f"conditions not at generation {generation(obj)}: {show_conditions(conds)}"
            return has_condition(conds, want), show_conditions(conds)
        self.poll(f"Gateway {ref_str(step['gateway'])} condition {want['type']}={want['status']}"
                  f"{' (' + want['reason'] + ')' if want.get('reason') else ''}", self.t.gateway, check)

    def op_gatewayclass_accepted(self, step):
        def check():
            obj = self.kgw.get("gatewayclass", None, step["gatewayclass"])
            if obj is None:
                return False, "the GatewayClass does not exist"
            conds = conditions(obj)
            if stale(obj, conds):
                return False, f"conditions not at generation {generation(obj)}: {show_conditions(conds)}"
            for c in conds:
                if c.get("type") == "Accepted" and (not step.get("status") or c.get("status") == step["status"]):
                    return True, ""
            return False, show_conditions(conds)
        self.poll(f"GatewayClass {step['gatewayclass']} Accepted", self.t.status, check)

    def target(self, t):
        obj = self.kgw.get(t["kind"], t.get("namespace"), t["name"])
        if obj is None:
            self.fail(f"{t['kind']} {ref_str(t)} does not exist")
        return obj

    def op_record_generation(self, step):
        self.generations[step["as"]] = generation(self.target(step["target"]))

    def op_assert_generation_changed(self, step):
        now = generation(self.target(step["target"]))
        if now == self.generations[step["since"]]:
            self.fail(f"{step['target']['kind']} {ref_str(step['target'])}: metadata.generation is still {now} after "
                      "the change")

    def op_patch(self, step):
        t = step["target"]
        obj = self.target(t)
        new = copy.deepcopy(obj)
        if "set" in step:
            set_path(new, step["set"]["path"], step["set"]["value"])
        elif "append" in step:
            get_path(new, step["append"]["path"]).append(step["append"]["value"])
        elif "keep_listeners" in step:
            new["spec"]["listeners"] = [ls for ls in new["spec"]["listeners"] if ls["name"] in step["keep_listeners"]]
        elif "remove_address" in step:
            value = self.remembered_addresses[step["remove_address"]]["value"]
            new["spec"]["addresses"] = [a for a in new["spec"]["addresses"] if a.get("value") != value]
        else:
            self.fail(f"patch step without a machine form: {step}")
        patch = merge_patch({"spec": obj.get("spec")}, {"spec": new.get("spec")})
        ok, out = self.kgw.patch(t["kind"], t.get("namespace"), t["name"], patch)
        if not ok:
            self.fail(f"kgw patch {t['kind']} {ref_str(t)} ({step['change']}) refused: {out}")

    def op_delete(self, step):
        t = step["target"]
        ok, out = self.kgw.delete(t["kind"], t.get("namespace"), t["name"])
        if not ok:
            self.fail(f"kgw delete {t['kind']} {ref_str(t)} refused: {out}")

    def op_assert(self, step):
        d = step["description"]
        if "exactly 2 listeners before the patch" in d:
            gw = self.target({"kind": "Gateway", "namespace": "gateway-conformance-infra",
                              "name": "gateway-remove-listener"})
            if len(gw["spec"]["listeners"]) != 2:
                self.fail(f"expected 2 listeners in spec, got {len(gw['spec']['listeners'])}")
        elif d.startswith("Gateway spec.addresses has exactly 3 entries"):
            gw = self.target({"kind": "Gateway", "namespace": "gateway-conformance-infra",
                              "name": "gateway-static-addresses"})
            addrs = gw["spec"].get("addresses") or []
            if len(addrs) != 3:
                self.fail(f"expected 3 spec.addresses, got {addrs}")
            self.remembered_addresses = {"invalid": addrs[0], "unusable": addrs[1], "usable": addrs[2]}
        elif d.startswith("using the Gateway object read right after the second patch"):
            gw = self.target({"kind": "Gateway", "namespace": "gateway-conformance-infra",
                              "name": "gateway-static-addresses"})
            spec_addrs = gw["spec"].get("addresses") or []
            values = [a.get("value") for a in (gw.get("status") or {}).get("addresses") or []]
            r = self.remembered_addresses
            if len(spec_addrs) != 1:
                self.fail(f"expected 1 spec.addresses entry, got {spec_addrs}")
            if r["unusable"]["value"] in values or r["invalid"]["value"] in values or r["usable"]["value"] not in values:
                self.fail(f"status.addresses {values}: must hold the usable {r['usable']['value']} and neither "
                          f"{r['unusable']['value']} nor {r['invalid']['value']}")
            st = next(a for a in gw["status"]["addresses"] if a.get("value") == r["usable"]["value"])
            if st.get("type") != r["usable"].get("type", "IPAddress"):
                self.fail(f"status address {st} has not the spec address type {r['usable'].get('type')}")
        else:
            self.fail(f"the runner has no check for this assertion: {d}")

    def op_setup_endpointslices(self, step):
        src = step["pods_of"]
        pods = self.env.pods.of(src["namespace"], src["name"])
        for prefix in step["prefixes"]:
            for fam in step["ip_families"]:
                name = f"{prefix}-{fam}"
                matching = [p for p in pods if (":" in p["ip"]) == (fam == "ip6")]
                if not matching:
                    continue
                ok, out = self.kgw.patch("EndpointSlice", src["namespace"], name,
                                         {"endpoints": [endpoint(p) for p in matching]})
                if not ok:
                    self.fail(f"kgw patch endpointslice {src['namespace']}/{name} refused: {out}")

    def op_infrastructure_propagation(self, step):
        self.fail("GatewayInfrastructure needs the Pods/Services/ServiceAccounts a Gateway deploys in a cluster; "
                  "kgw in standalone mode deploys none (the runner has no stand-in for them)")

    # -- HTTP

    def resolve(self, address):
        if address in self.vars:
            return self.vars[address]
        name, _, port = address.rpartition(":")
        if name in self.vars:
            host, _ = httpclient.split_host_port(self.vars[name])
            return httpclient.join_host_port(host, port)
        self.fail(f"address {address!r} names no variable set by an earlier step")

    def transport(self, spec, protocol):
        if not spec:
            return None
        if spec.get("kind") != "tls":
            self.fail(f"unknown transport {spec}")
        ca = self.env.secret_value(spec["trusted_ca_from_secret"])
        cert_file = key_file = None
        cc = spec.get("client_certificate_from_secret")
        if cc:
            cert_file, key_file = self.env.secret_files(cc)
        return httpclient.TlsTransport(spec["server_name"], ca, cert_file, key_file,
                                       alpn=["h2"] if protocol == "H2" else None)

    def one_request(self, exp, address, transport_spec):
        req = exp["request"]
        tls = self.transport(transport_spec, req.get("protocol", "HTTP"))
        resp = httpclient.send(req, address, exp.get("backend_set_response_headers"), tls)
        return resp, tls

    def eventually(self, exp, address, transport_spec):
        """MakeRequestAndExpectEventuallyConsistentResponse."""
        deadline = time.monotonic() + self.t.consistency
        successes = 0
        last = "no attempt"
        attempts = 0
        while True:
            attempts += 1
            try:
                resp, tls = self.one_request(exp, address, transport_spec)
                err = httpclient.compare(exp, resp, exp["request"].get("scheme", "http"))
                if err is None and transport_spec and transport_spec.get("assert_client_certificate_requested") \
                        and not tls.certificate_requested:
                    err = "the server did not request a client certificate"
            except TransportError as e:
                err = f"transport error: {e}"
            if err is None:
                successes += 1
                if successes >= self.t.required_successes:
                    return
                continue
            successes = 0
            last = err
            if time.monotonic() + 1 > deadline:
                self.fail(f"request to {exp['request'].get('scheme', 'http')}://{address}{exp['request'].get('path', '/')}"
                          f" (Host {exp['request'].get('host') or address}): no {self.t.required_successes} consecutive "
                          f"passes within {self.t.consistency:.0f} s ({attempts} attempts); last: {last}")
            time.sleep(1)

    def transport_error_expected(self, exp, address, transport_spec):
        """tls.MakeTLSRequestAndExpectFailureResponse: one request, which must fail in transport."""
        req = exp["request"]
        tls = self.transport(transport_spec, req.get("protocol", "HTTP"))
        try:
            resp = httpclient.send(req, address, exp.get("backend_set_response_headers"), tls)
        except TransportError as e:
            if transport_spec and transport_spec.get("client_certificate_from_secret") and tls is not None \
                    and not tls.certificate_requested:
                return f"the request failed ({e}) but the server never requested a client certificate"
            return None
        return f"expected a transport error, got HTTP {resp.status}{httpclient.body_hint(resp)}"

    def op_http(self, step):
        exps = step["expectations"]

        def run_one(exp):
            address = self.resolve(exp["address"] if step.get("address") == "per-expectation" else step["address"])
            if step["check"] == "tls_transport_error":
                err = self.transport_error_expected(exp, address, step.get("transport"))
                if err:
                    self.fail(err)
                return
            since = time.time()
            self.eventually(exp, address, step.get("transport"))
            if step.get("mirror_check") == "expect_mirrored_request":
                self.expect_mirrored(exp, since)
            elif step.get("mirror_check") == "percentage_distribution":
                self.percentage_mirror(step["mirror_distribution"], exp, address, step.get("transport"))

        def named(exp):
            # A named step is the subtest already (run_steps says its name); else each expectation is.
            return "" if step.get("name") else (exp.get("name") or f"expectation {exp.get('index')}")

        if step.get("parallel") and len(exps) > 1:
            with concurrent.futures.ThreadPoolExecutor(max_workers=min(8, len(exps))) as pool:
                futures = [(exp, pool.submit(run_one, exp)) for exp in exps]
                errors = []
                for exp, fut in futures:
                    try:
                        fut.result()
                    except StepFailed as e:
                        errors.append((named(exp), str(e)))
        else:
            errors = []
            for exp in exps:
                try:
                    run_one(exp)
                except StepFailed as e:
                    errors.append((named(exp), str(e)))
        if errors:
            for name, msg in errors[1:]:
                self.failures.append((name, msg))
            name, msg = errors[0]
            raise StepFailed(f"[{name}] {msg}" if name else msg)

    def expect_mirrored(self, exp, since):
        path = exp["request"].get("path", "/")
        pattern = mirror_log_pattern(path)
        for m in exp.get("mirrored_to") or []:
            def check(m=m):
                n = self.env.pods.log_count(m["namespace"], m["name"], pattern, since)
                return n > 0, f"{n} mirrored requests logged by {m['namespace']}/{m['name']}"
            self.poll(f"request {path} mirrored to {m['namespace']}/{m['name']}", self.t.mirror, check)

    def percentage_mirror(self, spec, exp, address, transport_spec):
        path = exp["request"].get("path", "/")
        pattern = mirror_log_pattern(path)
        total = spec["total_requests"]
        last = ""
        for _round in range(spec["rounds"]):
            since = time.time()
            failed = [err for _resp, err in self.send_many(exp, address, transport_spec, total, spec["concurrency"],
                                                           retry=True) if err]
            if failed:
                self.fail(f"{len(failed)} of {total} requests to {path} failed 10 times in a row; first: {failed[0]}")
            time.sleep(0.5)  # the mirrored copies trail their originals
            ok = True
            counts = []
            for m in exp["mirrored_to"]:
                n = self.env.pods.log_count(m["namespace"], m["name"], pattern, since)
                want = total * m["percent"] / 100
                lo, hi = want * (1 - spec["tolerance_percent"] / 100), want * (1 + spec["tolerance_percent"] / 100)
                counts.append(f"{m['name']}: {n} of {total} (expected {lo:.0f}..{hi:.0f})")
                ok = ok and lo <= n <= hi
            last = ", ".join(counts)
            if ok:
                return
            time.sleep(2)
        self.fail(f"mirror percentage for {path} not within tolerance after {spec['rounds']} rounds: {last}")

    def send_many(self, exp, address, transport_spec, total, concurrency, retry, headers_hook=None):
        results = []
        lock = threading.Lock()
        counter = iter(range(total))

        def worker():
            while True:
                with lock:
                    if next(counter, None) is None:
                        return
                for attempt in range(10 if retry else 1):
                    e = copy.deepcopy(exp)
                    if headers_hook:
                        headers_hook(e)
                    try:
                        resp, _ = self.one_request(e, address, transport_spec)
                        err = httpclient.compare(e, resp, e["request"].get("scheme", "http"))
                    except TransportError as x:
                        resp, err = None, f"transport error: {x}"
                    if err is None or attempt == (9 if retry else 0):
                        with lock:
                            results.append((resp, err))
                        break
        threads = [threading.Thread(target=worker) for _ in range(concurrency)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return results

    def op_http_weight_distribution(self, step):
        exp = self.last_expectation
        address = self.resolve(step["address"])
        weights = step["expected_weights"]
        last = ""
        for attempt in range(step["max_attempts"]):
            def entropy(e):
                r = random.randint(0, 2)
                if r in (0, 2):
                    time.sleep(random.randint(0, 999) / 1000)
                if r in (1, 2):
                    e["request"].setdefault("headers", {})["X-Jitter"] = str(random.randint(0, 9999))
            results = self.send_many(exp, address, None, step["total_requests"], step["concurrency"], retry=False,
                                     headers_hook=entropy)
            counts = {}
            bad = None
            for resp, err in results:
                if err:
                    bad = err
                    break
                pod = httpclient.captured_request(resp, "GET").get("pod", "")
                parts = pod.split("-")
                backend = "-".join(parts[:-2]) if len(parts) >= 3 else pod
                if backend not in weights:
                    bad = f"request reached {pod!r}, not one of {sorted(weights)}"
                    break
                counts[backend] = counts.get(backend, 0) + 1
            if bad is None:
                seen = {b for b, n in counts.items() if n}
                expected = {b for b, w in weights.items() if w > 0}
                off = [f"{b}: {counts.get(b, 0) / step['total_requests']:.3f} (expected {w})" for b, w in weights.items()
                       if abs(counts.get(b, 0) / step["total_requests"] - w) > step["tolerance"]]
                if len(seen) != len(expected):
                    bad = f"backends seen {sorted(seen)}, expected {sorted(expected)}"
                elif off:
                    bad = "distribution off: " + ", ".join(off)
                else:
                    return
            last = bad
        self.fail(f"weighted distribution not reached in {step['max_attempts']} runs of {step['total_requests']}: {last}")

    def op_http_backend_header_consistency(self, step):
        exp = self.last_expectation
        address = self.resolve(step["address"])
        for i in range(step["count"]):
            try:
                resp, _ = self.one_request(exp, address, None)
            except TransportError as e:
                self.fail(f"request {i + 1}: transport error: {e}")
            cr = httpclient.captured_request(resp, "GET")
            values = {k.lower(): v for k, v in cr.get("headers", {}).items()}.get("backend", [])
            if len(values) != 1:
                self.fail(f"request {i + 1}: expected exactly one Backend header at the backend, got {values}")
            if not cr.get("pod", "").startswith(values[0]):
                self.fail(f"request {i + 1}: Backend header {values[0]!r} but served by pod {cr.get('pod')!r}")

    def op_websocket(self, step):
        from websockets.sync.client import connect as ws_connect
        address = self.resolve(step["address"])
        go_name = f"TestConformance/{self.case['name']}/{step['name'].replace(' ', '_')}"
        url = step["url"].replace("{address}", address)
        origin = step["origin"].replace("{go_test_name}", go_name)
        deadline = time.monotonic() + self.t.consistency
        successes, last = 0, ""
        while True:
            try:
                with ws_connect(url, origin=origin, open_timeout=10, close_timeout=2) as ws:
                    for x in step["exchanges"]:
                        if "send_text" in x:
                            ws.send(x["send_text"])
                            got = ws.recv(timeout=10)
                            if got != x["expect_text"]:
                                raise ValueError(f"sent {x['send_text']!r}, got back {got!r}")
                        else:
                            data = bytes.fromhex(x["send_binary_hex"])
                            ws.send(data)
                            got = ws.recv(timeout=10)
                            if got != bytes.fromhex(x["expect_binary_hex"]):
                                raise ValueError(f"sent {data!r}, got back {got!r}")
                successes += 1
                if successes >= self.t.required_successes:
                    return
                continue
            except Exception as e:  # any failure of the exchange is an attempt that failed
                last = f"{type(e).__name__}: {e}"
                successes = 0
            if time.monotonic() + 1 > deadline:
                self.fail(f"WebSocket {url}: no {self.t.required_successes} consecutive exchanges within "
                          f"{self.t.consistency:.0f} s; last: {last}")
            time.sleep(1)

    # -- driver

    def run_steps(self, steps, path=()):
        for step in steps:
            op = step["op"]
            name = step.get("name")
            if op == "http" and step.get("expectations"):
                self.last_expectation = step["expectations"][-1]
            try:
                if op == "group":
                    self.run_steps(step["steps"], path + (name,))
                    continue
                handler = getattr(self, "op_" + op, None)
                if handler is None:
                    self.fail(f"the runner does not implement op {op!r}")
                handler(step)
            except StepFailed as e:
                where = "/".join(path + ((name,) if name else ()))
                if not getattr(e, "recorded", False):
                    self.failures.append((where, str(e)))
                    e.recorded = True
                if not name:
                    # A failed require outside a t.Run ends the test (or its enclosing group).
                    raise


def mirror_log_pattern(path):
    """Go's regexp.MustCompile(fmt.Sprintf("Echoing back request made to \\\\%s to client", path)): one
    backslash before the path (it escapes the path's leading '/'), the path itself unescaped."""
    return re.compile("Echoing back request made to \\" + path + " to client")


def get_path(obj, path):
    for part in re.findall(r"[^.\[\]]+|\[\d+\]", path):
        obj = obj[int(part[1:-1])] if part.startswith("[") else obj[part]
    return obj


def set_path(obj, path, value):
    parts = re.findall(r"[^.\[\]]+|\[\d+\]", path)
    for part in parts[:-1]:
        obj = obj[int(part[1:-1])] if part.startswith("[") else obj.setdefault(part, {})
    last = parts[-1]
    if last.startswith("["):
        obj[int(last[1:-1])] = value
    else:
        obj[last] = value


def merge_patch(old, new):
    """RFC 7386 merge patch turning `old` into `new` (lists are replaced whole)."""
    if not isinstance(old, dict) or not isinstance(new, dict):
        return new
    patch = {}
    for k in old:
        if k not in new:
            patch[k] = None
    for k, v in new.items():
        if k not in old:
            patch[k] = v
        elif old[k] != v:
            patch[k] = merge_patch(old[k], v)
    return patch


# ---------------------------------------------------------------------------------------------
# The environment: setup, per-test manifests, features


class Environment:
    def __init__(self, args, corpus, workdir):
        self.args = args
        self.corpus = corpus
        self.workdir = workdir
        self.timeouts = Timeouts(args.timeout_scale, args.max_time_to_consistency)
        self.setup_warnings = []
        self.secrets = {}
        self.templater = Templater({"type": "IPAddress", "value": args.usable_address},
                                   {"type": "IPAddress", "value": args.unusable_address})

    def secret_value(self, ref):
        data = self.secrets.get((ref["namespace"], ref["name"]))
        if data is None:
            raise StepFailed(f"no generated Secret {ref['namespace']}/{ref['name']}")
        return data[ref.get("key", "tls.crt")]

    def secret_files(self, ref):
        d = self.workdir / "pki"
        d.mkdir(parents=True, exist_ok=True)
        data = self.secrets[(ref["namespace"], ref["name"])]
        cert, key = d / f"{ref['namespace']}_{ref['name']}.client.crt", d / f"{ref['namespace']}_{ref['name']}.client.key"
        cert.write_text(data[ref.get("cert_key", "tls.crt")])
        key.write_text(data[ref.get("key_key", "tls.key")])
        return str(cert), str(key)

    def setup(self):
        t0 = time.monotonic()
        check_can_bind(self.args.pool)
        prog = yaml.safe_load((self.corpus / "base/programmatic-resources.yaml").read_text())
        objects, self.secrets = certs.programmatic_resources(prog["resources"])
        self.pods = Pods(self.workdir, self.args.pod_net, self.secrets)
        self.pods.start()
        self.kgw = Kgw(self.args.kgw, self.workdir, self.args.pool, self.args.verbose)
        self.kgw.start()
        self.setup_warnings += self.kgw.warnings
        gc = {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "GatewayClass",
              "metadata": {"name": GATEWAY_CLASS}, "spec": {"controllerName": CONTROLLER}}
        self.apply_objects("gatewayclass.yaml", [gc], "the suite's GatewayClass")
        base_text, base_objects = self.templater.render((self.corpus / "base/manifests.yaml").read_text(),
                                                        drop_kinds={"Deployment"})
        self.apply_text("base.yaml", base_text, "base/manifests.yaml (without its Deployments)")
        self.apply_objects("base-endpointslices.yaml", endpoint_slices(base_objects, self.pods),
                           "the base Services' EndpointSlices")
        self.apply_objects("programmatic.yaml", objects, "base/programmatic-resources.yaml")
        try:
            TestRun(self, {"name": "setup"}).op_namespaces_ready({"namespaces": CONFORMANCE_NAMESPACES})
        except StepFailed as e:
            self.setup_warnings.append(f"setup: {e}")
        self.supported = self.claimed_features()
        log(f"setup done in {time.monotonic() - t0:.1f} s; kgw claims: {', '.join(sorted(self.supported))}")
        for w in self.setup_warnings:
            log(f"SETUP WARNING: {w}")

    def claimed_features(self):
        gc = None
        try:
            gc = self.kgw.get("gatewayclass", None, GATEWAY_CLASS)
        except StepFailed:
            pass
        if gc is None:
            self.setup_warnings.append(
                f"GatewayClass {GATEWAY_CLASS} cannot be read back from kgw: no status.supportedFeatures, so only "
                "Core tests run")
            return set(CORE_FEATURES)
        raw = (gc.get("status") or {}).get("supportedFeatures") or []
        names = {f["name"] if isinstance(f, dict) else f for f in raw}
        if not names:
            self.setup_warnings.append(f"GatewayClass {GATEWAY_CLASS} status.supportedFeatures is empty: only Core "
                                       "tests run")
        return names | CORE_FEATURES

    def apply_objects(self, origin, objects, what):
        if objects:
            self.apply_text(origin, "---\n".join(yaml.safe_dump(o, sort_keys=False) for o in objects), what)

    def apply_text(self, origin, text, what):
        ok, out = self.kgw.apply(text, origin)
        if ok:
            return
        # Apply document by document, so one refused object does not hide the rest; each refusal
        # is a setup warning printed with kgw's own message.
        for i, doc in enumerate(split_documents(text)):
            obj = yaml.safe_load(doc)
            ok, out = self.kgw.apply(doc, f"{origin}.{i}.yaml")
            if not ok:
                self.setup_warnings.append(
                    f"{what}: kgw apply refused {obj.get('kind')} {obj['metadata'].get('namespace', '')}/"
                    f"{obj['metadata'].get('name')}: {short(out)}")

    def teardown(self):
        if getattr(self, "kgw", None):
            self.kgw.stop()
        if getattr(self, "pods", None):
            self.pods.stop()

    def run_case(self, case, manifest_override=None):
        """Runs one case: (status 'passed'|'failed', first failure, all failures, notes)."""
        run = TestRun(self, case)
        applied = []
        t0 = time.monotonic()
        try:
            for i, m in enumerate(case.get("manifests") or []):
                raw = manifest_override(m) if manifest_override else (self.corpus / m).read_text()
                text, objects = self.templater.render(raw)
                origin = f"{case['name']}-{i}.yaml"
                ok, out = self.kgw.apply(text, origin)
                applied.append(self.workdir / "manifests" / origin)
                if not ok:
                    raise StepFailed(f"kgw apply -f {m} refused the manifest: {out}")
                slices = endpoint_slices(objects, self.pods)
                if slices:
                    origin = f"{case['name']}-{i}-endpointslices.yaml"
                    ok, out = self.kgw.apply("---\n".join(yaml.safe_dump(o) for o in slices), origin)
                    applied.append(self.workdir / "manifests" / origin)
                    if not ok:
                        raise StepFailed(f"kgw apply refused the EndpointSlices of {m}'s Services: {out}")
            run.run_steps(case["steps"])
        except StepFailed as e:
            if not getattr(e, "recorded", False):
                run.failures.append(("", str(e)))
        except Exception as e:  # a runner bug: the test fails with it, the run goes on
            run.failures.append(("", f"runner error: {type(e).__name__}: {e}\n{traceback.format_exc()}"))
        finally:
            for path in reversed(applied):
                if path.exists():
                    self.kgw.delete_file(path)
        elapsed = time.monotonic() - t0
        status = "failed" if run.failures else "passed"
        first = ""
        if run.failures:
            where, msg = run.failures[0]
            first = f"[{where}] {msg}" if where else msg
        return status, first, run.failures, run.notes, elapsed


def short(text, limit=300):
    """kgw's first error line, cut: the setup warnings repeat for every refused object."""
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= limit else line[:limit] + "..."


def check_can_bind(pool):
    host = str(next(ipaddress.ip_network(pool).hosts()))
    try:
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, 80))
    except PermissionError:
        raise SystemExit(f"cannot bind {host}:80: the Gateways listen on ports 80 and 443 of the pool {pool}; "
                         "run as root (or give python3 and kgw CAP_NET_BIND_SERVICE)") from None
    except OSError as e:
        raise SystemExit(f"cannot bind {host}:80 ({e}): is another runner or kgw using the pool {pool}?") from None


# ---------------------------------------------------------------------------------------------
# Cases, selection, report


def load_cases(corpus):
    cases = []
    for path in sorted((corpus / "cases").glob("*.yaml")):
        case = yaml.safe_load(path.read_text())
        case["_file"] = path.name
        cases.append(case)
    return cases


def level(case):
    if case["support"] == "core":
        return "Core"
    return "Extended (provisional)" if case.get("provisional") else "Extended"


def kgw_version(binary):
    try:
        return subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10).stdout.split()[-1]
    except (OSError, IndexError, subprocess.SubprocessError):
        return "unknown"


def write_report(args, results, env, cases, elapsed):
    core = [r for r in results if r["support"] == "core"]
    ext = [r for r in results if r["support"] == "extended"]

    def stats(rs):
        return {"Passed": sum(r["status"] == "passed" for r in rs),
                "Skipped": sum(r["status"] not in ("passed", "failed") for r in rs),
                "Failed": sum(r["status"] == "failed" for r in rs)}

    def result(rs):
        s = stats(rs)
        return "failure" if s["Failed"] else ("partial" if s["Skipped"] else "success")

    ext_features = sorted({f for c in cases for f in c["features"]} - CORE_FEATURES)
    core_block = {"result": result(core), "statistics": stats(core)}
    failed_core = [r["name"] for r in core if r["status"] == "failed"]
    if failed_core:
        core_block["failedTests"] = failed_core
    ext_block = {"result": result(ext), "statistics": stats(ext),
                 "supportedFeatures": [f for f in ext_features if f in env.supported],
                 "unsupportedFeatures": [f for f in ext_features if f not in env.supported]}
    failed_ext = [r["name"] for r in ext if r["status"] == "failed"]
    if failed_ext:
        ext_block["failedTests"] = failed_ext
    # Never skipped silently: each test not run (or run only as information) is named.
    for block, rs in ((core_block, core), (ext_block, ext)):
        skipped = [r["name"] for r in rs if r["status"] not in ("passed", "failed")]
        if skipped:
            block["skippedTests"] = skipped
    report = {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "ConformanceReport",
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "implementation": {"organization": "kgateway-rs", "project": "kgateway-rs",
                           "url": "https://github.com/kgateway-rs/kgateway-rs", "version": kgw_version(args.kgw),
                           "contact": ["https://github.com/kgateway-rs/kgateway-rs/issues"]},
        "gatewayAPIVersion": GATEWAY_API_VERSION,
        "gatewayAPIChannel": "standard",
        "mode": "default",
        "profiles": [{"name": "GATEWAY-HTTP", "core": core_block, "extended": ext_block}],
    }
    if env.setup_warnings:
        report["setupWarnings"] = env.setup_warnings
    informational = [r["name"] for r in results if r["status"].startswith("informational")]
    if informational:
        report["informationalTests"] = informational
    Path(args.report).parent.mkdir(parents=True, exist_ok=True)
    Path(args.report).write_text(yaml.safe_dump(report, sort_keys=False))
    table = markdown_table(results, elapsed)
    Path(args.report).with_suffix(".md").write_text(table)
    return table


def markdown_table(results, elapsed):
    lines = ["| test | level | result | first failure |", "|---|---|---|---|"]
    for r in results:
        first = r["first"].replace("|", "\\|").replace("\n", " ")
        if len(first) > 400:
            first = first[:400] + "..."
        lines.append(f"| {r['name']} | {r['level']} | {r['status']} | {first} |")
    counts = {}
    for r in results:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    lines.append("")
    lines.append(f"{len(results)} tests: {summary}; {elapsed:.0f} s")
    return "\n".join(lines) + "\n"


def run_suite(args, env, cases):
    only = {n.strip() for n in args.only.split(",")} if args.only else None
    if only:
        unknown = only - {c["name"] for c in cases}
        if unknown:
            raise SystemExit(f"--only: no such test: {', '.join(sorted(unknown))}")
    results = []
    for case in cases:
        if only and case["name"] not in only:
            continue
        missing = [f for f in case["features"] if f not in env.supported]
        r = {"name": case["name"], "level": level(case), "support": case["support"], "first": "",
             "features": case["features"]}
        if missing and not args.all:
            r["status"] = "not supported"
            r["first"] = "kgw does not claim " + ", ".join(missing)
            results.append(r)
            continue
        log(f"--- {case['name']} ({level(case)})")
        status, first, failures, notes, elapsed = env.run_case(case)
        if missing:
            status = f"informational {status}"
        r.update(status=status, first=first)
        results.append(r)
        for where, msg in failures:
            log(f"    FAIL {('[' + where + '] ') if where else ''}{msg}")
        for n in notes:
            log(f"    note: {n}")
        log(f"    {status.upper()} in {elapsed:.1f} s")
    return results


# ---------------------------------------------------------------------------------------------
# Self-check: mutated cases the runner must fail, each for its reason


def self_check_cases(corpus):
    cases = {c["name"]: c for c in load_cases(corpus)}
    base = cases["HTTPRouteSimpleSameNamespace"]
    manifest = base["manifests"][0]
    original = (corpus / manifest).read_text()

    def http_exp(case):
        return next(s for s in case["steps"] if s["op"] == "http")["expectations"][0]

    checks = []

    def expectations(case):
        for step in walk_steps(case["steps"]):
            if step["op"] == "http":
                yield from step["expectations"]

    def mutant(name, why, expect_in, mutate=None, manifest_text=None, of=None):
        c = copy.deepcopy(cases[of] if of else base)
        c["name"] = f"SelfCheck-{name}"
        if mutate:
            mutate(c)
        checks.append((c, why, expect_in, (lambda m: manifest_text) if manifest_text else None))

    checks.append((copy.deepcopy(base), "control: the unmutated case must pass", None, None))
    mutant("WrongBackend", "expects infra-backend-v2 where the route sends to infra-backend-v1",
           "expected pod name to start with 'infra-backend-v2'",
           lambda c: http_exp(c).update(backend="infra-backend-v2"))
    mutant("WrongStatus", "expects 404 where the route answers 200", "expected status code to be one of [404], got 200",
           lambda c: http_exp(c)["response"].update(status_codes=[404]))
    mutant("WrongRequestHeader", "expects a request header the client never sent",
           "expected X-Self-Check header to be set",
           lambda c: http_exp(c)["expected_request"].update(headers={"X-Self-Check": "yes"}))
    mutant("WrongResponseHeader", "expects a response header nobody sets",
           "expected response header X-Self-Check to be set",
           lambda c: http_exp(c)["response"].update(headers={"X-Self-Check": "yes"}))
    mutant("ConditionNeverComes", "waits for Accepted=False/NotAllowedByListeners on an accepted route",
           "condition Accepted=False (NotAllowedByListeners) for Gateway gateway-conformance-infra/same-namespace: "
           "not reached within",
           lambda c: c["steps"].insert(1, {"op": "route_condition", "route": c["steps"][0]["routes"][0],
                                           "gateway": c["steps"][0]["gateway"],
                                           "condition": {"type": "Accepted", "status": "False",
                                                         "reason": "NotAllowedByListeners"}}))
    mutant("ManifestRefused", "applies a manifest with a field kgw does not know",
           "refused the manifest", manifest_text=original.replace("spec:\n", "spec:\n  selfCheckUnknownField: 1\n", 1))
    mutant("BackendDoesNotAnswer", "routes to a Service with no ready endpoint (no echo pod behind it)",
           "expected status code to be one of [200], got 5",
           manifest_text=original.replace("name: infra-backend-v1", "name: grpc-infra-backend-v1"))
    mutant("WrongRedirectHost", "expects a redirect to another host than the filter's",
           "expected redirected hostname to be 'self-check.example'",
           lambda c: next(e for e in expectations(c) if "redirect" in e)["redirect"].update(host="self-check.example"),
           of="HTTPRouteRedirectHostAndStatus")
    mutant("UntrustedCertificate", "trusts another CA than the one that signed the listener's certificate",
           "certificate signed by unknown authority",
           lambda c: [s["transport"].update(trusted_ca_from_secret={
               "namespace": "gateway-conformance-web-backend", "name": "certificate", "key": "tls.crt"})
               for s in walk_steps(c["steps"]) if s.get("transport")],
           of="HTTPRouteHTTPSListener")
    mutant("WrongWeights", "expects a 50/50 split of a 70/30 route (one 500-request run)", "distribution off",
           lambda c: [s.update(expected_weights={"infra-backend-v1": 0.5, "infra-backend-v2": 0.5,
                                                 "infra-backend-v3": 0.0}, max_attempts=1)
                      for s in walk_steps(c["steps"]) if s["op"] == "http_weight_distribution"],
           of="HTTPRouteWeight")
    return checks


def walk_steps(steps):
    for step in steps:
        yield step
        if step["op"] == "group":
            yield from walk_steps(step["steps"])


def run_self_check(env, corpus):
    results = []
    ok_all = True
    for case, why, expect_in, override in self_check_cases(corpus):
        log(f"--- self-check {case['name']}: {why}")
        status, first, failures, _notes, elapsed = env.run_case(case, override)
        if expect_in is None:
            good = status == "passed"
            verdict = "ok (passed)" if good else f"CONTROL FAILED: {first}"
        else:
            good = status == "failed" and expect_in in first
            verdict = (f"ok (failed: {first[:200]})" if good else
                       f"RUNNER DID NOT CATCH IT: status {status}, first failure {first!r}, expected one containing "
                       f"{expect_in!r}")
        ok_all = ok_all and good
        log(f"    {verdict} ({elapsed:.1f} s)")
        results.append({"name": case["name"], "level": "self-check", "support": "self-check",
                        "status": "ok" if good else "NOT CAUGHT", "first": verdict})
    return results, ok_all


# ---------------------------------------------------------------------------------------------


def find_corpus(explicit):
    if explicit:
        return Path(explicit)
    env = os.environ.get("GATEWAY_API_CONFORMANCE")
    if env:
        return Path(env)
    # CI has ../shared beside the clone; a git worktree further down finds the same one higher up.
    for parent in REPO.parents:
        candidate = parent / "shared/conformance/gateway-api"
        if candidate.is_dir():
            return candidate
    raise SystemExit("the Gateway API conformance corpus is not found: put ../shared beside the checkout, or "
                     "give --corpus DIR (or GATEWAY_API_CONFORMANCE=DIR)")


def main():
    p = argparse.ArgumentParser(description="Gateway API conformance runner for kgw")
    p.add_argument("--kgw", default=os.environ.get("KGW_BIN", str(REPO / "target/debug/kgw")))
    p.add_argument("--corpus", help="the corpus directory [default: ../shared/conformance/gateway-api beside the repo]")
    p.add_argument("--only", help="run only these tests (comma-separated ShortNames)")
    p.add_argument("--all", action="store_true", help="also run tests of features kgw does not claim (informational)")
    p.add_argument("--report", help="the ConformanceReport YAML [default: target/gateway-api-conformance/report.yaml]")
    p.add_argument("--workdir", help="state, logs, manifests [default: beside the report]")
    p.add_argument("--self-check", action="store_true",
                   help="run mutated copies of a real case that the runner must fail (and the original, which must pass)")
    p.add_argument("--timeout-scale", type=float, default=1.0,
                   help="multiply upstream's status waits (60 s, 180 s for a Gateway, 10 s for a mirror) by this")
    p.add_argument("--max-time-to-consistency", type=float, default=30.0,
                   help="seconds an HTTP expectation has to pass 3 times in a row (upstream: 30)")
    p.add_argument("--pool", default="127.0.10.0/24", help="kgw run --gateway-address-pool")
    p.add_argument("--pod-net", default="127.0.20.0/24", help="loopback addresses of the echo pods")
    p.add_argument("--usable-address", default="127.0.11.1", help="PLACEHOLDER_USABLE_ADDRS")
    p.add_argument("--unusable-address", default="198.51.100.1", help="PLACEHOLDER_UNUSABLE_ADDRS")
    p.add_argument("-v", "--verbose", action="store_true", help="print every kgw command")
    args = p.parse_args()
    corpus = find_corpus(args.corpus)
    default_dir = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target")) / "gateway-api-conformance"
    if not args.report:
        args.report = str(default_dir / ("self-check.yaml" if args.self_check else "report.yaml"))
    workdir = Path(args.workdir) if args.workdir else Path(args.report).parent / (
        "self-check-work" if args.self_check else "work")
    workdir.mkdir(parents=True, exist_ok=True)
    if not Path(args.kgw).exists():
        raise SystemExit(f"no kgw binary at {args.kgw}: build it (cargo build -p kgw) or give --kgw")
    t0 = time.monotonic()
    env = Environment(args, corpus, workdir)
    try:
        env.setup()
        if args.self_check:
            results, ok = run_self_check(env, corpus)
            table = markdown_table(results, time.monotonic() - t0)
            Path(args.report).with_suffix(".md").parent.mkdir(parents=True, exist_ok=True)
            Path(args.report).with_suffix(".md").write_text(table)
            print("\n" + table)
            return 0 if ok else 1
        cases = load_cases(corpus)
        results = run_suite(args, env, cases)
    finally:
        env.teardown()
    elapsed = time.monotonic() - t0
    table = write_report(args, results, env, cases, elapsed)
    print("\n" + table)
    for w in env.setup_warnings:
        print(f"SETUP WARNING: {w}")
    print(f"report: {args.report} (and {Path(args.report).with_suffix('.md')})")
    gating = [r for r in results if r["status"] == "failed"]
    if gating:
        print(f"FAILED: {len(gating)} Core or claimed tests: {', '.join(r['name'] for r in gating)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
