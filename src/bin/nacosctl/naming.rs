//! `nacosctl service` and `nacosctl instance`: the naming layer's services and persistent
//! instances, read through the Nacos Open API any member serves.

use std::io::Write;

use anyhow::Result;
use nacos_raft::client::Client;
use serde_json::{json, Value};

use crate::cli::{InstanceCmd, NamingScope, Output, ServiceCmd};
use crate::exit::Exit;
use crate::render;

/// Most service names asked for per page while listing them all.
const PAGE: usize = 1000;

/// `group@@name` sets the group; otherwise `--group` does.
fn split_group<'a>(name: &'a str, scope: &'a NamingScope) -> (&'a str, &'a str) {
    match name.split_once("@@") {
        Some((g, n)) => (g, n),
        None => (scope.group.as_str(), name),
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Metadata as `k=v,k2=v2`, the form Nacos also takes it in.
fn pairs(v: &Value) -> String {
    v.as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", text(v)))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

pub fn service(
    client: &Client,
    output: Output,
    out: &mut dyn Write,
    cmd: &ServiceCmd,
) -> Result<Exit> {
    match cmd {
        ServiceCmd::List { scope } => {
            let mut names: Vec<String> = Vec::new();
            for page_no in 1.. {
                let (page, size) = (page_no.to_string(), PAGE.to_string());
                let v = client.naming_read(
                    "/nacos/v1/ns/service/list",
                    vec![
                        ("namespaceId", scope.namespace.as_str()),
                        ("groupName", scope.group.as_str()),
                        ("pageNo", &page),
                        ("pageSize", &size),
                    ],
                    "services",
                )?;
                let doms = v["doms"].as_array().cloned().unwrap_or_default();
                let done = doms.len() < PAGE;
                names.extend(doms.iter().map(text));
                if done {
                    break;
                }
            }
            match output {
                Output::Json => render::json(
                    out,
                    &json!({"namespace": scope.namespace, "group": scope.group, "services": names}),
                )?,
                Output::Table => render::table(
                    out,
                    &["NAMESPACE", "GROUP", "SERVICE"],
                    names
                        .iter()
                        .map(|n| vec![scope.namespace.clone(), scope.group.clone(), n.clone()])
                        .collect(),
                )?,
                Output::Text => {
                    for n in &names {
                        writeln!(out, "{n}")?;
                    }
                }
            }
        }
        ServiceCmd::Get { name, scope } => {
            let (group, name) = split_group(name, scope);
            let v = client.naming_read(
                "/nacos/v1/ns/service",
                vec![
                    ("namespaceId", scope.namespace.as_str()),
                    ("groupName", group),
                    ("serviceName", name),
                ],
                &format!("service {group}@@{name} in namespace {}", scope.namespace),
            )?;
            let clusters: Vec<String> = v["clusters"]
                .as_array()
                .map(|c| c.iter().map(|c| text(&c["name"])).collect())
                .unwrap_or_default();
            match output {
                Output::Json => render::json(out, &v)?,
                Output::Table | Output::Text => {
                    let rows = vec![
                        vec!["namespace".into(), text(&v["namespaceId"])],
                        vec!["group".into(), text(&v["groupName"])],
                        vec!["name".into(), text(&v["name"])],
                        vec!["protect threshold".into(), text(&v["protectThreshold"])],
                        vec!["metadata".into(), pairs(&v["metadata"])],
                        vec!["selector".into(), text(&v["selector"])],
                        vec!["clusters".into(), clusters.join(",")],
                    ];
                    if output == Output::Table {
                        render::table(out, &["FIELD", "VALUE"], rows)?;
                    } else {
                        for r in rows {
                            writeln!(out, "{}\t{}", r[0], r[1])?;
                        }
                    }
                }
            }
        }
    }
    Ok(Exit::Ok)
}

pub fn instance(
    client: &Client,
    output: Output,
    out: &mut dyn Write,
    cmd: &InstanceCmd,
) -> Result<Exit> {
    let InstanceCmd::List {
        service,
        scope,
        clusters,
        healthy_only,
    } = cmd;
    let (group, name) = split_group(service, scope);
    let mut query = vec![
        ("namespaceId", scope.namespace.as_str()),
        ("groupName", group),
        ("serviceName", name),
        ("healthyOnly", if *healthy_only { "true" } else { "false" }),
    ];
    if let Some(c) = clusters {
        query.push(("clusters", c.as_str()));
    }
    let what = format!("service {group}@@{name} in namespace {}", scope.namespace);
    let v = client.naming_read("/nacos/v1/ns/instance/list", query, &what)?;
    let hosts = v["hosts"].as_array().cloned().unwrap_or_default();
    match output {
        Output::Json => render::json(out, &json!({"service": v["name"], "instances": hosts}))?,
        Output::Table | Output::Text => {
            let rows: Vec<Vec<String>> = hosts
                .iter()
                .map(|h| {
                    vec![
                        text(&h["ip"]),
                        text(&h["port"]),
                        text(&h["clusterName"]),
                        text(&h["weight"]),
                        text(&h["healthy"]),
                        pairs(&h["metadata"]),
                    ]
                })
                .collect();
            if output == Output::Table {
                render::table(
                    out,
                    &["IP", "PORT", "CLUSTER", "WEIGHT", "HEALTHY", "METADATA"],
                    rows,
                )?;
            } else {
                for r in rows {
                    writeln!(out, "{}", r.join("\t"))?;
                }
            }
        }
    }
    Ok(Exit::Ok)
}
