//! Renders the Helm chart in deploy/helm/etcd-monitor without helm (none can
//! be installed here): Go's text/template through the gtmpl crate, plus the
//! few Sprig functions the chart is kept to. Anything else the chart used
//! would fail to parse here, so the chart cannot quietly grow past them.

use std::collections::HashMap;
use std::path::Path;

use gtmpl::{Context, Template};
use gtmpl_value::{FuncError, Number, Value};
use serde_json::Value as Json;

/// The Sprig functions the chart may use.
const FUNCS: &[(&str, gtmpl_value::Func)] = &[
    ("default", default),
    ("quote", quote),
    ("required", required),
    ("toYaml", to_yaml),
    ("nindent", nindent),
];

fn text(v: &Value) -> String {
    match v {
        Value::NoValue | Value::Nil => String::new(),
        other => other.to_string(),
    }
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::NoValue | Value::Nil => true,
        Value::Bool(b) => !b,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) | Value::Map(o) => o.is_empty(),
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::Function(_) => false,
    }
}

/// `default D V`: V unless it is empty, else D (`V | default D`).
fn default(args: &[Value]) -> Result<Value, FuncError> {
    match args {
        [d] => Ok(d.clone()),
        [d, v] => Ok(if is_empty(v) { d.clone() } else { v.clone() }),
        _ => Err(FuncError::ExactlyXArgs("default".into(), 2)),
    }
}

/// `quote V`: V as a double-quoted string.
fn quote(args: &[Value]) -> Result<Value, FuncError> {
    let [v] = args else {
        return Err(FuncError::ExactlyXArgs("quote".into(), 1));
    };
    Ok(Value::String(
        serde_json::to_string(&text(v)).map_err(|e| FuncError::Generic(e.to_string()))?,
    ))
}

/// `required MSG V`: V, or the rendering fails with MSG when V is empty.
fn required(args: &[Value]) -> Result<Value, FuncError> {
    let [msg, v] = args else {
        return Err(FuncError::ExactlyXArgs("required".into(), 2));
    };
    if is_empty(v) {
        Err(FuncError::Generic(text(msg)))
    } else {
        Ok(v.clone())
    }
}

/// `toYaml V`: V as block YAML without the final newline (as Helm's).
fn to_yaml(args: &[Value]) -> Result<Value, FuncError> {
    let [v] = args else {
        return Err(FuncError::ExactlyXArgs("toYaml".into(), 1));
    };
    let yaml =
        serde_yaml_ng::to_string(&to_json(v)).map_err(|e| FuncError::Generic(e.to_string()))?;
    Ok(Value::String(yaml.trim_end_matches('\n').to_string()))
}

/// `nindent N S`: a newline, then S with every line indented by N spaces.
fn nindent(args: &[Value]) -> Result<Value, FuncError> {
    let [n, s] = args else {
        return Err(FuncError::ExactlyXArgs("nindent".into(), 2));
    };
    let n = match n {
        Value::Number(n) => n.as_u64().unwrap_or(0) as usize,
        _ => return Err(FuncError::UnableToConvertFromValue),
    };
    let pad = " ".repeat(n);
    let lines: Vec<String> = text(s).lines().map(|l| format!("{pad}{l}")).collect();
    Ok(Value::String(format!("\n{}", lines.join("\n"))))
}

pub fn from_json(v: &Json) -> Value {
    match v {
        Json::Null => Value::Nil,
        Json::Bool(b) => Value::Bool(*b),
        Json::Number(n) => Value::Number(match (n.as_u64(), n.as_i64()) {
            (Some(u), _) => Number::from(u),
            (None, Some(i)) => Number::from(i),
            _ => Number::from(n.as_f64().unwrap_or(0.0)),
        }),
        Json::String(s) => Value::String(s.clone()),
        Json::Array(a) => Value::Array(a.iter().map(from_json).collect()),
        Json::Object(o) => Value::Object(
            o.iter()
                .map(|(k, v)| (k.clone(), from_json(v)))
                .collect::<HashMap<_, _>>(),
        ),
    }
}

fn to_json(v: &Value) -> Json {
    match v {
        Value::NoValue | Value::Nil | Value::Function(_) => Json::Null,
        Value::Bool(b) => Json::Bool(*b),
        Value::String(s) => Json::String(s.clone()),
        Value::Number(n) => match (n.as_u64(), n.as_i64(), n.as_f64()) {
            (Some(u), _, _) => Json::from(u),
            (None, Some(i), _) => Json::from(i),
            (_, _, Some(f)) => Json::from(f),
            _ => Json::Null,
        },
        Value::Array(a) => Json::Array(a.iter().map(to_json).collect()),
        Value::Object(o) | Value::Map(o) => {
            Json::Object(o.iter().map(|(k, v)| (k.clone(), to_json(v))).collect())
        }
    }
}

/// `base` with `over` merged into it (objects key by key, the rest replaced),
/// as `helm install -f over.yaml` merges values.
pub fn merge(base: &mut Json, over: &Json) {
    match (base, over) {
        (Json::Object(b), Json::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(k) {
                    Some(slot) => merge(slot, v),
                    None => {
                        b.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (b, o) => *b = o.clone(),
    }
}

fn yaml_file(path: &Path) -> Json {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The chart rendered as `helm template RELEASE chart -n NAMESPACE -f over`
/// would: every template's output, as `# Source:` headed YAML documents.
/// The error names the template and what failed (a `required` value, say).
pub fn render(chart: &Path, release: &str, namespace: &str, over: &Json) -> Result<String, String> {
    let mut values = yaml_file(&chart.join("values.yaml"));
    merge(&mut values, over);
    let meta = yaml_file(&chart.join("Chart.yaml"));
    let context = serde_json::json!({
        "Values": values,
        "Release": { "Name": release, "Namespace": namespace, "Service": "Helm" },
        "Chart": {
            "Name": meta["name"],
            "Version": meta["version"],
            "AppVersion": meta["appVersion"],
        },
    });
    let context = Context::from(from_json(&context));
    let dir = chart.join("templates");
    let helpers = std::fs::read_to_string(dir.join("_helpers.tpl")).map_err(|e| e.to_string())?;
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .map_err(|e| e.to_string())?
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    let mut out = String::new();
    for file in files {
        let name = format!(
            "etcd-monitor/templates/{}",
            file.file_name().unwrap().to_string_lossy()
        );
        let mut t = Template::with_name(&name);
        t.add_funcs(FUNCS);
        t.add_template("_helpers.tpl", helpers.as_str())
            .map_err(|e| format!("_helpers.tpl: {e}"))?;
        t.parse(std::fs::read_to_string(&file).map_err(|e| e.to_string())?)
            .map_err(|e| format!("{name}: {e}"))?;
        let rendered = t.render(&context).map_err(|e| format!("{name}: {e}"))?;
        if rendered
            .lines()
            .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        {
            out.push_str(&format!(
                "---\n# Source: {name}\n{}\n",
                rendered.trim_matches('\n')
            ));
        }
    }
    Ok(out)
}

#[test]
fn the_sprig_functions_behave_as_helm_s() {
    let s = |v: &str| Value::String(v.into());
    assert_eq!(quote(&[s("a\"b")]).unwrap(), s("\"a\\\"b\""));
    assert_eq!(default(&[s("d"), s("")]).unwrap(), s("d"));
    assert_eq!(default(&[s("d"), s("v")]).unwrap(), s("v"));
    assert!(required(&[s("need x"), Value::NoValue]).is_err());
    assert_eq!(
        nindent(&[Value::Number(2u64.into()), s("a: 1\nb: 2")]).unwrap(),
        s("\n  a: 1\n  b: 2")
    );
    let v = from_json(&serde_json::json!({"b": [1, "x"], "a": true}));
    assert_eq!(to_yaml(&[v]).unwrap(), s("a: true\nb:\n- 1\n- x"));
}
