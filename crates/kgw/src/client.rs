//! `kgw apply|get|delete`: kubectl's workflow against a running gateway's admin API.

use std::io::Read;
use std::path::Path;

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::Args;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::Value;

#[derive(Args)]
pub struct ServerArgs {
    /// The admin address of the running gateway.
    #[arg(long, default_value = "127.0.0.1:19000", env = "KGW_SERVER")]
    server: String,
    /// Bearer token, when the gateway was started with --admin-token.
    #[arg(long, env = "KGW_ADMIN_TOKEN")]
    token: Option<String>,
}

async fn call(
    server: &ServerArgs,
    method: Method,
    path: &str,
    body: Option<(String, &str)>,
) -> anyhow::Result<(StatusCode, String)> {
    let address = server.server.trim_start_matches("http://").trim_end_matches('/');
    let stream = tokio::net::TcpStream::connect(address).await.with_context(|| {
        format!("cannot reach the gateway at {address}: is `kgw run` running? (set --server to its --admin-address)")
    })?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::HOST, address);
    if let Some(t) = &server.token {
        req = req.header(http::header::AUTHORIZATION, format!("Bearer {t}"));
    }
    let payload = match body {
        Some((text, origin)) => {
            req = req
                .header("x-kgw-source", origin)
                .header(http::header::CONTENT_TYPE, "application/yaml");
            Bytes::from(text)
        }
        None => Bytes::new(),
    };
    let resp = sender.send_request(req.body(Full::new(payload))?).await?;
    let status = resp.status();
    let bytes = resp.into_body().collect().await?.to_bytes();
    Ok((status, String::from_utf8_lossy(&bytes).trim_end().to_string()))
}

/// Reads `-f` arguments: `-` is stdin, a directory is its *.yaml|*.yml|*.json files.
fn read_sources(files: &[String]) -> anyhow::Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for f in files {
        if f == "-" {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .context("cannot read the manifest from stdin")?;
            out.push(("STDIN".to_string(), text));
            continue;
        }
        let path = Path::new(f);
        if path.is_dir() {
            let mut entries: Vec<_> = std::fs::read_dir(path)
                .with_context(|| format!("cannot read the directory {f}"))?
                .flatten()
                .map(|e| e.path())
                .filter(|p| {
                    matches!(
                        p.extension().and_then(|e| e.to_str()),
                        Some("yaml" | "yml" | "json")
                    )
                })
                .collect();
            entries.sort();
            for p in entries {
                let text =
                    std::fs::read_to_string(&p).with_context(|| format!("cannot read {}", p.display()))?;
                out.push((p.display().to_string(), text));
            }
        } else {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("the path \"{f}\" does not exist or cannot be read"))?;
            out.push((f.clone(), text));
        }
    }
    Ok(out)
}

pub async fn apply(server: &ServerArgs, files: &[String]) -> anyhow::Result<()> {
    let mut failed = false;
    for (origin, text) in read_sources(files)? {
        let (status, body) = call(server, Method::POST, "/apis/apply", Some((text, &origin))).await?;
        if status.is_success() {
            if !body.is_empty() {
                println!("{body}");
            }
        } else {
            eprintln!("{body}");
            failed = true;
        }
    }
    if failed {
        std::process::exit(1);
    }
    Ok(())
}

pub async fn delete(
    server: &ServerArgs,
    kind: Option<&str>,
    names: &[String],
    namespace: &str,
    files: &[String],
) -> anyhow::Result<()> {
    let mut targets: Vec<(String, String, String)> = Vec::new();
    if !files.is_empty() {
        for (origin, text) in read_sources(files)? {
            let objects = api::parse_manifests(&text, &origin).map_err(|e| anyhow::anyhow!("{e}"))?;
            for o in objects {
                let k = o.key();
                targets.push((k.kind.as_str().to_ascii_lowercase(), k.namespace, k.name));
            }
        }
    } else {
        let Some(kind) = kind else {
            bail!("error: you must specify KIND NAME, or -f FILE")
        };
        if names.is_empty() {
            bail!(
                "error: resource(s) were provided, but no name was specified: kgw delete {kind} NAME -n NAMESPACE"
            );
        }
        let namespace = if cluster_scoped(kind) { "" } else { namespace };
        for n in names {
            targets.push((kind.to_string(), namespace.to_string(), n.clone()));
        }
    }
    let mut failed = false;
    for (kind, ns, name) in targets {
        let (status, body) = call(server, Method::DELETE, &format!("/apis/{kind}/{ns}/{name}"), None).await?;
        if status.is_success() {
            println!("{body}");
        } else {
            eprintln!("{body}");
            failed = true;
        }
    }
    if failed {
        std::process::exit(1);
    }
    Ok(())
}

/// `kgw patch`: the object as the gateway has it, changed by the patch, applied back. Only the
/// object's own fields go back (its status and the fields the store sets stay the store's).
pub async fn patch(
    server: &ServerArgs,
    kind: &str,
    name: &str,
    namespace: &str,
    patch_type: &str,
    patch_text: &str,
) -> anyhow::Result<()> {
    let namespace = if cluster_scoped(kind) { "" } else { namespace };
    let path = format!("/apis/{kind}/{namespace}/{name}");
    let (status, body) = call(server, Method::GET, &path, None).await?;
    if !status.is_success() {
        eprintln!("{body}");
        std::process::exit(1);
    }
    let list: Value = serde_json::from_str(&body).context("the gateway sent an unreadable answer")?;
    let Some(mut object) = list.pointer("/items/0").cloned() else {
        bail!("Error from server (NotFound): {kind} \"{name}\" not found in namespace \"{namespace}\"");
    };
    let patch: Value = serde_json::from_str(patch_text)
        .with_context(|| format!("error: -p is not valid JSON: {patch_text}"))?;
    let before = object.clone();
    match patch_type {
        "json" => {
            let ops: json_patch::Patch = serde_json::from_value(patch).context(
                "error: --type json needs a list of operations, e.g. '[{\"op\":\"add\",\"path\":\"/spec/x\",\"value\":1}]'",
            )?;
            json_patch::patch(&mut object, &ops)
                .map_err(|e| anyhow::anyhow!("error: the JSON patch does not apply to {kind}/{name}: {e}"))?;
        }
        "merge" => json_patch::merge(&mut object, &patch),
        other => bail!(
            "error: --type {other} is not supported: use --type json (RFC 6902 operations) or --type merge (RFC 7386)"
        ),
    }
    let kind_lower = object
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or(kind)
        .to_ascii_lowercase();
    if object == before {
        println!("{kind_lower}/{name} patched (no change)");
        return Ok(());
    }
    if let Some(o) = object.as_object_mut() {
        o.remove("status");
    }
    if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        for managed in [
            "resourceVersion",
            "generation",
            "creationTimestamp",
            "uid",
            "managedFields",
        ] {
            meta.remove(managed);
        }
    }
    let text = serde_json::to_string(&object)?;
    let (status, body) = call(
        server,
        Method::POST,
        "/apis/apply",
        Some((text, &format!("patch of {kind_lower}/{name}"))),
    )
    .await?;
    if !status.is_success() {
        eprintln!("{body}");
        std::process::exit(1);
    }
    println!("{kind_lower}/{name} patched");
    Ok(())
}

pub async fn get(
    server: &ServerArgs,
    kind: &str,
    name: Option<&str>,
    namespace: Option<&str>,
    output: Option<&str>,
) -> anyhow::Result<()> {
    // Cluster-scoped kinds: no namespace, whatever -n says (as kubectl).
    let namespace = if cluster_scoped(kind) { None } else { namespace };
    let path = match (namespace, name) {
        (Some(ns), Some(n)) => format!("/apis/{kind}/{ns}/{n}"),
        (Some(ns), None) => format!("/apis/{kind}/{ns}"),
        (None, Some(n)) if cluster_scoped(kind) => format!("/apis/{kind}//{n}"),
        (None, Some(n)) => {
            bail!("error: a resource cannot be retrieved by name across all namespaces ({n}); use -n")
        }
        (None, None) => format!("/apis/{kind}"),
    };
    let (status, body) = call(server, Method::GET, &path, None).await?;
    if !status.is_success() {
        eprintln!("{body}");
        std::process::exit(1);
    }
    let list: Value = serde_json::from_str(&body).context("the gateway sent an unreadable answer")?;
    let items = list
        .get("items")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let shown = if name.is_some() && items.len() == 1 {
        items[0].clone()
    } else {
        list.clone()
    };
    match output {
        Some("json") => println!("{}", serde_json::to_string_pretty(&shown)?),
        Some("yaml") => print!("{}", api::yaml::to_string(&shown)),
        Some("name") => {
            for i in &items {
                let kind = i
                    .get("kind")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_ascii_lowercase();
                println!(
                    "{kind}/{}",
                    i.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("")
                );
            }
        }
        Some(other) => bail!(
            "error: unable to match a printer suitable for the output format \"{other}\", allowed formats are: json,name,yaml"
        ),
        None => table(
            &items,
            namespace.is_none() && !cluster_scoped(kind),
            namespace.unwrap_or(""),
        ),
    }
    Ok(())
}

/// A kind without namespaces (GatewayClass, Namespace), as the user typed it.
fn cluster_scoped(kind: &str) -> bool {
    api::Kind::from_cli(kind).is_some_and(|k| !k.is_namespaced())
}

/// kubectl's default table for the kind: the columns its CRD or kubectl prints.
fn table(items: &[Value], all_namespaces: bool, namespace: &str) {
    if items.is_empty() {
        if all_namespaces || namespace.is_empty() {
            eprintln!("No resources found");
        } else {
            eprintln!("No resources found in {namespace} namespace.");
        }
        return;
    }
    let kind = items[0].get("kind").and_then(Value::as_str).unwrap_or("");
    let mut header: Vec<&str> = Vec::new();
    if all_namespaces {
        header.push("NAMESPACE");
    }
    header.push("NAME");
    header.extend(match kind {
        "BackendConfigPolicy" => vec!["ACCEPTED", "ATTACHED"],
        "Gateway" => vec!["CLASS", "ADDRESS", "PROGRAMMED"],
        "GatewayClass" => vec!["CONTROLLER", "ACCEPTED"],
        "HTTPRoute" | "GRPCRoute" => vec!["HOSTNAMES"],
        "Service" => vec!["TYPE", "PORT(S)"],
        "EndpointSlice" => vec!["ADDRESSTYPE", "PORTS", "ENDPOINTS"],
        _ => vec![],
    });
    header.push("AGE");
    let mut rows: Vec<Vec<String>> = vec![header.iter().map(|h| h.to_string()).collect()];
    for i in items {
        let text = |ptr: &str| i.pointer(ptr).and_then(Value::as_str).unwrap_or("").to_string();
        let mut row = Vec::new();
        if all_namespaces {
            row.push(text("/metadata/namespace"));
        }
        row.push(text("/metadata/name"));
        match kind {
            "BackendConfigPolicy" => {
                row.push(ancestor_condition(i, "Accepted"));
                row.push(ancestor_condition(i, "Attached"));
            }
            "Gateway" => {
                row.push(text("/spec/gatewayClassName"));
                let addresses: Vec<String> = list(i, "/status/addresses")
                    .iter()
                    .map(|a| str_of(a, "value"))
                    .collect();
                row.push(addresses.join(","));
                let programmed = list(i, "/status/conditions")
                    .iter()
                    .find(|c| c.get("type").and_then(Value::as_str) == Some("Programmed"))
                    .map(|c| str_of(c, "status"))
                    .unwrap_or_default();
                row.push(programmed);
            }
            "GatewayClass" => {
                row.push(text("/spec/controllerName"));
                let accepted = list(i, "/status/conditions")
                    .iter()
                    .find(|c| c.get("type").and_then(Value::as_str) == Some("Accepted"))
                    .map(|c| str_of(c, "status"))
                    .unwrap_or_else(|| "Unknown".into());
                row.push(accepted);
            }
            "HTTPRoute" | "GRPCRoute" => {
                let hosts: Vec<String> = list(i, "/spec/hostnames")
                    .iter()
                    .filter_map(|h| h.as_str().map(str::to_string))
                    .collect();
                row.push(format!("[\"{}\"]", hosts.join("\",\"")).replace("[\"\"]", ""));
            }
            "Service" => {
                row.push(
                    i.pointer("/spec/type")
                        .and_then(Value::as_str)
                        .unwrap_or("ClusterIP")
                        .to_string(),
                );
                let ports: Vec<String> = list(i, "/spec/ports")
                    .iter()
                    .map(|p| {
                        let proto = p.get("protocol").and_then(Value::as_str).unwrap_or("TCP");
                        format!("{}/{proto}", p.get("port").and_then(Value::as_i64).unwrap_or(0))
                    })
                    .collect();
                row.push(ports.join(","));
            }
            "EndpointSlice" => {
                row.push(text("/addressType"));
                let ports: Vec<String> = list(i, "/ports")
                    .iter()
                    .filter_map(|p| p.get("port").and_then(Value::as_i64).map(|n| n.to_string()))
                    .collect();
                row.push(ports.join(","));
                let addresses: Vec<String> = list(i, "/endpoints")
                    .iter()
                    .flat_map(|e| {
                        e.get("addresses")
                            .and_then(Value::as_array)
                            .cloned()
                            .unwrap_or_default()
                    })
                    .filter_map(|a| a.as_str().map(str::to_string))
                    .collect();
                row.push(addresses.join(","));
            }
            _ => {}
        }
        row.push(
            i.pointer("/metadata/creationTimestamp")
                .and_then(Value::as_str)
                .and_then(|t| t.parse::<jiff::Timestamp>().ok())
                .map(|t| human_age(jiff::Timestamp::now().as_second() - t.as_second()))
                .unwrap_or_else(|| "<unknown>".into()),
        );
        rows.push(
            row.into_iter()
                .map(|c| if c.is_empty() { "<none>".into() } else { c })
                .collect(),
        );
    }
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0))
        .collect();
    for row in rows {
        let line: Vec<String> = row.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        println!("{}", line.join("   ").trim_end());
    }
}

fn list(item: &Value, ptr: &str) -> Vec<Value> {
    item.pointer(ptr)
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

fn str_of(v: &Value, key: &str) -> String {
    v.get(key).and_then(Value::as_str).unwrap_or("").to_string()
}

/// `.status.ancestors[*].conditions[?(@.type==TYPE)].status`, as the CRD's printer column.
fn ancestor_condition(item: &Value, ty: &str) -> String {
    let values: Vec<String> = list(item, "/status/ancestors")
        .iter()
        .flat_map(|a| {
            a.get("conditions")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
        })
        .filter(|c| c.get("type").and_then(Value::as_str) == Some(ty))
        .map(|c| str_of(&c, "status"))
        .collect();
    values.join(",")
}

fn human_age(secs: i64) -> String {
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}
