//! Compiles `proto/` with the pure-Rust `protox` (no `protoc` needed) and generates:
//! - prost messages + tonic client/server for every package,
//! - serde derives (camelCase JSON/YAML) on every message that holds no `google.protobuf` type,
//! - `serde_enum.rs`: one `#[serde(with = ...)]` module per enum so that enum fields (which prost
//!   stores as `i32`) read and write Istio-style names such as `"ROUND_ROBIN"`.

use std::collections::{BTreeMap, BTreeSet};
use std::error::Error;
use std::fmt::Write as _;
use std::path::PathBuf;

use prost_types::DescriptorProto;
use prost_types::field_descriptor_proto::{Label, Type};

const PROTO_ROOT: &str = "proto";
const PROTOS: &[&str] = &[
    "halyard/discovery/v1/discovery.proto",
    "halyard/config/v1/config.proto",
];
/// Proto package -> Rust module the generated file is included in (see `src/lib.rs`).
const PACKAGES: &[(&str, &str)] = &[
    ("halyard.discovery.v1", "crate::discovery"),
    ("halyard.config.v1", "crate::resources"),
];

const SERDE_DERIVE: &str = "#[derive(serde::Serialize, serde::Deserialize)]";

fn main() -> Result<(), Box<dyn Error>> {
    for p in PROTOS {
        println!("cargo:rerun-if-changed={PROTO_ROOT}/{p}");
    }
    let fds = protox::compile(PROTOS, [PROTO_ROOT])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);

    let mut messages = BTreeMap::new();
    for file in &fds.file {
        let package = file.package();
        if PACKAGES.iter().all(|(p, _)| *p != package) {
            continue;
        }
        for m in &file.message_type {
            collect_messages(
                &format!(".{package}"),
                package_module(package),
                m,
                &mut messages,
            );
        }
    }
    let serde_ok = serde_capable(&messages);
    for full in messages.keys() {
        let parent = full.rsplit_once('.').map(|(p, _)| p).unwrap_or_default();
        if serde_ok.contains(parent) && !serde_ok.contains(full) {
            return Err(format!("{full} cannot derive serde but its parent message does").into());
        }
    }

    let mut builder = tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .btree_map(".");
    let mut enum_modules: BTreeMap<String, (String, BTreeSet<Kind>)> = BTreeMap::new();

    for (full, info) in &messages {
        if !serde_ok.contains(full) {
            continue;
        }
        // prost matches attribute paths by prefix, so a parent's attribute already covers its
        // nested messages.
        let parent = full.rsplit_once('.').map(|(p, _)| p).unwrap_or_default();
        if !serde_ok.contains(parent) {
            builder = builder.message_attribute(
                full,
                format!("{SERDE_DERIVE}\n#[serde(rename_all = \"camelCase\", default, deny_unknown_fields)]"),
            );
        }
        for oneof in &info.desc.oneof_decl {
            let name = oneof.name();
            // proto3 `optional` fields are synthetic oneofs named `_<field>`; prost emits no enum.
            if name.starts_with('_') {
                continue;
            }
            builder = builder.type_attribute(
                format!("{full}.{name}"),
                format!("{SERDE_DERIVE}\n#[serde(rename_all = \"camelCase\")]"),
            );
        }
        for field in &info.desc.field {
            if field.r#type() != Type::Enum {
                continue;
            }
            let enum_full = field.type_name().to_string();
            let module = module_ident(&enum_full);
            let rust_path = rust_path(&enum_full, &messages)?;
            let in_real_oneof = field.oneof_index.is_some() && !field.proto3_optional();
            let kind = if field.label() == Label::Repeated {
                Kind::Repeated
            } else if field.proto3_optional() {
                Kind::Optional
            } else {
                Kind::Scalar
            };
            let with = match kind {
                Kind::Scalar => format!("crate::serde_enum::{module}"),
                Kind::Optional => format!("crate::serde_enum::{module}::optional"),
                Kind::Repeated => format!("crate::serde_enum::{module}::repeated"),
            };
            let path = if in_real_oneof {
                let idx = field.oneof_index.unwrap_or_default() as usize;
                let oneof = info
                    .desc
                    .oneof_decl
                    .get(idx)
                    .ok_or("oneof index out of range")?
                    .name();
                format!("{full}.{oneof}.{}", field.name())
            } else {
                format!("{full}.{}", field.name())
            };
            builder = builder.field_attribute(path, format!("#[serde(with = \"{with}\")]"));
            enum_modules
                .entry(module)
                .or_insert_with(|| (rust_path, BTreeSet::new()))
                .1
                .insert(kind);
        }
    }

    std::fs::write(
        out_dir.join("serde_enum.rs"),
        render_enum_modules(&enum_modules),
    )?;
    builder.compile_fds(fds)?;
    Ok(())
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Scalar,
    Optional,
    Repeated,
}

struct MessageInfo {
    desc: DescriptorProto,
    /// Rust path of the module holding this message's nested types (`crate::resources::cluster`).
    nested_module: String,
}

fn collect_messages(
    parent_full: &str,
    parent_module: &str,
    m: &DescriptorProto,
    out: &mut BTreeMap<String, MessageInfo>,
) {
    let full = format!("{parent_full}.{}", m.name());
    let nested_module = format!("{parent_module}::{}", snake(m.name()));
    for n in &m.nested_type {
        if !n
            .options
            .as_ref()
            .and_then(|o| o.map_entry)
            .unwrap_or(false)
        {
            collect_messages(&full, &nested_module, n, out);
        }
    }
    out.insert(
        full,
        MessageInfo {
            desc: m.clone(),
            nested_module,
        },
    );
}

fn package_module(package: &str) -> &'static str {
    PACKAGES
        .iter()
        .find(|(p, _)| *p == package)
        .map(|(_, m)| *m)
        .unwrap_or("crate")
}

/// Messages that can derive serde: none of their fields (transitively) is a `google.protobuf` type.
fn serde_capable(messages: &BTreeMap<String, MessageInfo>) -> BTreeSet<String> {
    let mut ok: BTreeSet<String> = messages.keys().cloned().collect();
    loop {
        let before = ok.len();
        let current = ok.clone();
        ok.retain(|full| {
            messages[full].desc.field.iter().all(|f| {
                if f.r#type() != Type::Message {
                    return true;
                }
                let t = f.type_name();
                if t.starts_with(".google.protobuf.") {
                    return false;
                }
                // Map entries are not in `messages`; their value types are checked via the entry.
                if let Some(entry) = map_entry(messages, full, t) {
                    return entry.field.iter().all(|ef| {
                        ef.r#type() != Type::Message
                            || (!ef.type_name().starts_with(".google.protobuf.")
                                && current.contains(ef.type_name()))
                    });
                }
                current.contains(t)
            })
        });
        if ok.len() == before {
            return ok;
        }
    }
}

fn map_entry<'a>(
    messages: &'a BTreeMap<String, MessageInfo>,
    owner: &str,
    type_name: &str,
) -> Option<&'a DescriptorProto> {
    let name = type_name.strip_prefix(&format!("{owner}."))?;
    messages[owner].desc.nested_type.iter().find(|n| {
        n.name() == name
            && n.options
                .as_ref()
                .and_then(|o| o.map_entry)
                .unwrap_or(false)
    })
}

/// Rust path of a proto enum (`.halyard.config.v1.Cluster.LbPolicy` -> `crate::resources::cluster::LbPolicy`).
fn rust_path(enum_full: &str, messages: &BTreeMap<String, MessageInfo>) -> Result<String, String> {
    let (parent, name) = enum_full
        .rsplit_once('.')
        .ok_or_else(|| format!("bad enum name {enum_full}"))?;
    if let Some(info) = messages.get(parent) {
        return Ok(format!("{}::{}", info.nested_module, upper_camel(name)));
    }
    let package = parent.trim_start_matches('.');
    if PACKAGES.iter().any(|(p, _)| *p == package) {
        return Ok(format!(
            "{}::{}",
            package_module(package),
            upper_camel(name)
        ));
    }
    Err(format!("enum {enum_full} is outside the halyard packages"))
}

fn module_ident(enum_full: &str) -> String {
    enum_full
        .trim_start_matches('.')
        .split('.')
        .map(snake)
        .collect::<Vec<_>>()
        .join("_")
}

/// prost's snake_case for simple CamelCase names (the schema avoids acronyms).
fn snake(s: &str) -> String {
    let mut out = String::new();
    let chars: Vec<char> = s.chars().collect();
    for (i, c) in chars.iter().enumerate() {
        if c.is_uppercase() {
            let prev_lower =
                i > 0 && (chars[i - 1].is_lowercase() || chars[i - 1].is_ascii_digit());
            let next_lower = chars.get(i + 1).is_some_and(|n| n.is_lowercase());
            let prev_upper = i > 0 && chars[i - 1].is_uppercase();
            if prev_lower || (prev_upper && next_lower) {
                out.push('_');
            }
            out.extend(c.to_lowercase());
        } else {
            out.push(*c);
        }
    }
    out
}

fn upper_camel(s: &str) -> String {
    // Names in the schema are already UpperCamel without acronyms; prost keeps them unchanged.
    s.to_string()
}

fn render_enum_modules(modules: &BTreeMap<String, (String, BTreeSet<Kind>)>) -> String {
    let mut out = String::from("// @generated by build.rs: serde adapters for enum fields.\n");
    for (module, (path, kinds)) in modules {
        let _ = writeln!(out, "pub mod {module} {{");
        let _ = writeln!(
            out,
            "    const NAMES: crate::enum_serde::EnumNames = crate::enum_serde::EnumNames {{ \
             what: \"{path}\", \
             name: |v| {path}::try_from(v).ok().map(|e| e.as_str_name()), \
             parse: |s| {path}::from_str_name(s).map(|e| e as i32) }};"
        );
        for kind in kinds {
            let (m, ty, ser, de) = match kind {
                Kind::Scalar => ("", "i32", "serialize", "deserialize"),
                Kind::Optional => (
                    "optional",
                    "Option<i32>",
                    "serialize_optional",
                    "deserialize_optional",
                ),
                Kind::Repeated => (
                    "repeated",
                    "Vec<i32>",
                    "serialize_repeated",
                    "deserialize_repeated",
                ),
            };
            let indent = if m.is_empty() { "    " } else { "        " };
            if !m.is_empty() {
                let _ = writeln!(out, "    pub mod {m} {{\n        use super::NAMES;");
            }
            let _ = writeln!(
                out,
                "{indent}pub fn serialize<S: serde::Serializer>(v: &{ty}, s: S) -> Result<S::Ok, S::Error> {{ crate::enum_serde::{ser}(&NAMES, v, s) }}"
            );
            let _ = writeln!(
                out,
                "{indent}pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<{ty}, D::Error> {{ crate::enum_serde::{de}(&NAMES, d) }}"
            );
            if !m.is_empty() {
                let _ = writeln!(out, "    }}");
            }
        }
        let _ = writeln!(out, "}}");
    }
    out
}
