//! Tool schemas: deriving a tool's argument schema from a Rust type, and encoding a
//! [`ToolSpec`] in each LLM provider's tool format.
//!
//! A tool's arguments are a Rust struct deriving `serde::Deserialize` and
//! `schemars::JsonSchema`; its doc comments become the descriptions the LLM reads.
//! [`FnTool`] wraps such a struct and an async function into a [`Tool`], so writing a tool is
//! writing a function. The encoders turn the one [`ToolSpec`] into what each provider's API
//! wants, including Gemini's restricted schema dialect ([`simplify_gemini_schema`]).

use std::future::Future;
use std::marker::PhantomData;

use async_trait::async_trait;
use schemars::generate::SchemaSettings;
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde_json::{json, Map, Value};

use super::{Tool, ToolContext, ToolError, ToolOutput, ToolSpec};

/// Why a Rust type cannot describe a tool's arguments.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SchemaError {
    /// The providers take arguments as a JSON object, so the type must be a struct (or a map);
    /// the string is the schema that was generated instead.
    #[error("tool arguments must be a struct (a JSON object schema), got {0}")]
    NotAnObject(String),
}

/// Arguments of a tool that takes none (a struct with no fields, as `()` is not a JSON object).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, JsonSchema)]
pub struct NoArgs {}

/// The JSON schema of `T` as a tool's `parameters`: `{"type":"object","properties":{...},
/// "required":[...]}` with field descriptions from `T`'s doc comments.
///
/// Subschemas are inlined (providers handle `$ref` poorly); only a recursive type keeps
/// `$defs`. The root's `$schema`, `title` and `description` are removed: the LLM reads the
/// tool's own description, the title would be the Rust type name, and the struct's doc comment
/// is left for developers. `required` is left out when empty, as pydantic does.
pub fn parameters_schema<T: JsonSchema>() -> Result<Value, SchemaError> {
    let generator = SchemaSettings::draft2020_12()
        .with(|s| {
            s.inline_subschemas = true;
            s.meta_schema = None;
        })
        .into_generator();
    let mut schema = generator.into_root_schema_for::<T>().to_value();
    let Some(obj) = schema.as_object_mut() else {
        return Err(SchemaError::NotAnObject(schema.to_string()));
    };
    if obj.get("type").and_then(Value::as_str) != Some("object") {
        return Err(SchemaError::NotAnObject(schema.to_string()));
    }
    obj.remove("$schema");
    obj.remove("title");
    obj.remove("description");
    obj.entry("properties")
        .or_insert_with(|| Value::Object(Map::new()));
    if obj
        .get("required")
        .and_then(Value::as_array)
        .is_some_and(Vec::is_empty)
    {
        obj.remove("required");
    }
    Ok(schema)
}

/// The parameters to encode: the spec's schema, or an empty object schema when it has none
/// (the Python fallback for a tool without a schema).
fn parameters_or_empty(spec: &ToolSpec) -> Value {
    match &spec.parameters {
        Value::Null => json!({"type": "object", "properties": {}}),
        p => p.clone(),
    }
}

/// The OpenAI Chat Completions tool:
/// `{"type":"function","function":{"name","description","parameters"}}`.
pub fn openai_chat_tool(spec: &ToolSpec) -> Value {
    json!({
        "type": "function",
        "function": {
            "name": spec.name,
            "description": spec.description,
            "parameters": parameters_or_empty(spec),
        },
    })
}

/// The OpenAI Realtime / Responses tool, flat (spec §1.3, the Python `build_openai_schema`):
/// `{"name","description","parameters","type":"function"}`, no `strict` key.
pub fn openai_realtime_tool(spec: &ToolSpec) -> Value {
    json!({
        "name": spec.name,
        "description": spec.description,
        "parameters": parameters_or_empty(spec),
        "type": "function",
    })
}

/// The Anthropic Messages tool: `{"name","description","input_schema"}`.
pub fn anthropic_tool(spec: &ToolSpec) -> Value {
    json!({
        "name": spec.name,
        "description": spec.description,
        "input_schema": parameters_or_empty(spec),
    })
}

/// The Gemini function declaration (spec §1.4): `{"name","description","parameters"}` with
/// the parameters [simplified](simplify_gemini_schema). `parameters` is absent when the tool
/// takes no arguments (an empty or missing schema, or an object without properties), which is
/// how the Python `FunctionDeclaration(parameters=None)` serializes.
pub fn gemini_function_declaration(spec: &ToolSpec) -> Value {
    let mut decl = json!({"name": spec.name, "description": spec.description});
    let usable = match &spec.parameters {
        // The Python test: a truthy dict whose "properties" is not None.
        Value::Object(m) => !m.is_empty() && !m.get("properties").is_some_and(Value::is_null),
        _ => false,
    };
    if usable {
        if let Some(p) = simplify_gemini_schema(&spec.parameters) {
            decl["parameters"] = p;
        }
    }
    decl
}

/// The Amazon Nova Sonic tool (spec §1.5):
/// `{"toolSpec":{"name","description","inputSchema":{"json":"<schema as a string>"}}}`.
/// The description falls back to the name (Nova rejects an empty one); the schema string is
/// written as Python's `json.dumps` writes it (`", "` and `": "` separators, non-ASCII
/// escaped), with keys sorted.
pub fn nova_sonic_tool(spec: &ToolSpec) -> Value {
    let description = if spec.description.is_empty() {
        &spec.name
    } else {
        &spec.description
    };
    let mut schema = String::new();
    python_json_dumps(&parameters_or_empty(spec), &mut schema);
    json!({"toolSpec": {
        "name": spec.name,
        "description": description,
        "inputSchema": {"json": schema},
    }})
}

/// Writes `v` as Python's `json.dumps(v)` with default options would.
fn python_json_dumps(v: &Value, out: &mut String) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::String(s) => {
            out.push('"');
            for c in s.chars() {
                match c {
                    '"' => out.push_str("\\\""),
                    '\\' => out.push_str("\\\\"),
                    '\n' => out.push_str("\\n"),
                    '\r' => out.push_str("\\r"),
                    '\t' => out.push_str("\\t"),
                    '\u{8}' => out.push_str("\\b"),
                    '\u{c}' => out.push_str("\\f"),
                    ' '..='~' => out.push(c),
                    _ => {
                        let mut units = [0u16; 2];
                        for u in c.encode_utf16(&mut units) {
                            out.push_str(&format!("\\u{u:04x}"));
                        }
                    }
                }
            }
            out.push('"');
        }
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                python_json_dumps(x, out);
            }
            out.push(']');
        }
        Value::Object(m) => {
            out.push('{');
            for (i, (k, x)) in m.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                python_json_dumps(&Value::String(k.clone()), out);
                out.push_str(": ");
                python_json_dumps(x, out);
            }
            out.push('}');
        }
    }
}

/// The keys of Gemini's `Schema` (after the ones the Python simplification deletes: `title`,
/// `default`); anything else (`$ref`, `const`, `prefixItems`, `exclusiveMinimum`...) is
/// rejected by the API, so it is removed.
const GEMINI_KEYS: &[&str] = &[
    "type",
    "format",
    "description",
    "nullable",
    "enum",
    "maxItems",
    "minItems",
    "properties",
    "required",
    "minProperties",
    "maxProperties",
    "minLength",
    "maxLength",
    "pattern",
    "example",
    "anyOf",
    "propertyOrdering",
    "items",
    "minimum",
    "maximum",
];

/// Simplifies a JSON schema into Gemini's dialect (spec §1.4), or `None` when nothing is left
/// (a tool with no arguments).
///
/// As in Python: `title`, `default`, `additionalProperties` and `$defs` go; types are
/// uppercased (`"STRING"`, `"OBJECT"`...); an object without properties (or whose properties
/// all simplify to nothing) becomes `None` and is dropped from its parent; an array whose
/// `items` become `None` loses them.
///
/// Fixed where the Python version produced schemas Gemini rejects:
/// - `$ref` is resolved against `$defs` (Python deleted `$defs` and left the reference
///   dangling); a recursive reference is dropped, as Gemini cannot express recursion;
/// - `anyOf`/`oneOf` are simplified too (Python left lowercase types inside), `T | null`
///   becomes `T` with `"nullable": true`, as does a `["T","null"]` type list, and a choice
///   of string constants becomes an `enum`;
/// - `required` is pruned of properties that were dropped;
/// - keys Gemini does not know, and `format`s it does not accept (`uint32`...), are removed.
pub fn simplify_gemini_schema(schema: &Value) -> Option<Value> {
    let defs = schema
        .get("$defs")
        .or_else(|| schema.get("definitions"))
        .and_then(Value::as_object);
    simplify(schema, defs, &mut Vec::new())
}

fn is_null_schema(v: &Value) -> bool {
    v.get("type").and_then(Value::as_str) == Some("null")
}

fn gemini_type(t: &str) -> Option<&'static str> {
    Some(match t {
        "string" => "STRING",
        "number" => "NUMBER",
        "integer" => "INTEGER",
        "boolean" => "BOOLEAN",
        "array" => "ARRAY",
        "object" => "OBJECT",
        _ => return None,
    })
}

/// `stack` holds the definitions being expanded, to stop at recursion.
fn simplify(
    node: &Value,
    defs: Option<&Map<String, Value>>,
    stack: &mut Vec<String>,
) -> Option<Value> {
    let Value::Object(orig) = node else {
        // `true`/`false` schemas have no Gemini equivalent.
        return None;
    };
    let mut map = orig.clone();

    if let Some(reference) = map.remove("$ref") {
        let name = reference.as_str().and_then(|r| {
            r.strip_prefix("#/$defs/")
                .or_else(|| r.strip_prefix("#/definitions/"))
        })?;
        if stack.iter().any(|s| s == name) {
            return None;
        }
        let target = defs?.get(name)?;
        stack.push(name.to_owned());
        let resolved = simplify(target, defs, stack);
        stack.pop();
        let mut resolved = resolved?;
        // Keys beside the reference (a field's own description) win over the definition's.
        if let (Some(desc), Some(obj)) = (map.get("description"), resolved.as_object_mut()) {
            obj.insert("description".into(), desc.clone());
        }
        return Some(resolved);
    }

    let mut nullable = false;
    for key in ["anyOf", "oneOf"] {
        let Some(Value::Array(alts)) = map.remove(key) else {
            continue;
        };
        nullable |= alts.iter().any(is_null_schema);
        let alts: Vec<Value> = alts
            .iter()
            .filter(|a| !is_null_schema(a))
            .filter_map(|a| simplify(a, defs, stack))
            .collect();
        let consts: Option<Vec<Value>> = alts
            .iter()
            .map(|a| {
                a.get("enum")
                    .filter(|_| a.get("type") == Some(&json!("STRING")))
            })
            .map(|e| e.and_then(Value::as_array).cloned())
            .collect::<Option<Vec<_>>>()
            .map(|v| v.into_iter().flatten().collect());
        match (alts.len(), consts) {
            (0, _) => return None,
            (1, _) => {
                for (k, v) in alts.into_iter().next()?.as_object()? {
                    map.entry(k.clone()).or_insert_with(|| v.clone());
                }
            }
            (_, Some(values)) => {
                map.insert("type".into(), json!("STRING"));
                map.insert("enum".into(), Value::Array(values));
            }
            _ => {
                map.insert("anyOf".into(), Value::Array(alts));
            }
        }
    }

    // A constant is a one-value enum.
    if let Some(c) = map.remove("const") {
        if c.is_string() {
            map.entry("type").or_insert_with(|| json!("string"));
            map.insert("enum".into(), json!([c]));
        }
    }

    match map.get("type").cloned() {
        Some(Value::String(t)) if t.eq_ignore_ascii_case("null") => return None,
        Some(Value::String(t)) => {
            if let Some(g) = gemini_type(&t) {
                map.insert("type".into(), json!(g));
            }
        }
        Some(Value::Array(types)) => {
            nullable |= types.iter().any(|t| t == "null");
            let rest: Vec<&str> = types
                .iter()
                .filter_map(Value::as_str)
                .filter(|t| *t != "null")
                .filter_map(gemini_type)
                .collect();
            match rest.as_slice() {
                [] => return None,
                [one] => {
                    map.insert("type".into(), json!(one));
                }
                many => {
                    map.remove("type");
                    let alts = many.iter().map(|t| json!({"type": t})).collect();
                    map.insert("anyOf".into(), Value::Array(alts));
                }
            }
        }
        _ => {}
    }
    if nullable {
        map.insert("nullable".into(), json!(true));
    }

    let ty = map.get("type").and_then(Value::as_str).map(str::to_owned);
    let format_ok = match (ty.as_deref(), map.get("format").and_then(Value::as_str)) {
        (_, None) => true,
        (Some("NUMBER"), Some(f)) => matches!(f, "float" | "double"),
        (Some("INTEGER"), Some(f)) => matches!(f, "int32" | "int64"),
        (Some("STRING"), Some(f)) => matches!(f, "enum" | "date-time"),
        _ => false,
    };
    if !format_ok {
        map.remove("format");
    }

    match ty.as_deref() {
        Some("OBJECT") => {
            let props: Map<String, Value> = map
                .get("properties")
                .and_then(Value::as_object)
                .map(|p| {
                    p.iter()
                        .filter_map(|(k, v)| Some((k.clone(), simplify(v, defs, stack)?)))
                        .collect()
                })
                .unwrap_or_default();
            if props.is_empty() {
                return None;
            }
            let required: Vec<Value> = map
                .get("required")
                .and_then(Value::as_array)
                .map(|r| {
                    r.iter()
                        .filter(|n| n.as_str().is_some_and(|n| props.contains_key(n)))
                        .cloned()
                        .collect()
                })
                .unwrap_or_default();
            map.insert("properties".into(), Value::Object(props));
            if required.is_empty() {
                map.remove("required");
            } else {
                map.insert("required".into(), Value::Array(required));
            }
        }
        Some("ARRAY") => match map.get("items").and_then(|i| simplify(i, defs, stack)) {
            Some(items) => {
                map.insert("items".into(), items);
            }
            None => {
                map.remove("items");
            }
        },
        _ => {}
    }

    map.retain(|k, _| GEMINI_KEYS.contains(&k.as_str()));
    Some(Value::Object(map))
}

/// A [`Tool`] made of an async function whose arguments are the struct `T`: the schema comes
/// from `T` ([`parameters_schema`]), and the LLM's arguments are deserialized into `T` before
/// the function runs.
pub struct FnTool<T, F> {
    spec: ToolSpec,
    f: F,
    _args: PhantomData<fn() -> T>,
}

impl<T: JsonSchema, F> FnTool<T, F> {
    /// A tool named `name`, described to the LLM by `description`, running `f`. Fails when
    /// `T` is not a struct.
    pub fn new(
        name: impl Into<String>,
        description: impl Into<String>,
        f: F,
    ) -> Result<Self, SchemaError> {
        Ok(FnTool {
            spec: ToolSpec {
                name: name.into(),
                description: description.into(),
                parameters: parameters_schema::<T>()?,
            },
            f,
            _args: PhantomData,
        })
    }
}

#[async_trait]
impl<T, F, Fut> Tool for FnTool<T, F>
where
    T: DeserializeOwned + JsonSchema + Send + 'static,
    F: Fn(T, ToolContext) -> Fut + Send + Sync,
    Fut: Future<Output = Result<ToolOutput, ToolError>> + Send,
{
    fn spec(&self) -> &ToolSpec {
        &self.spec
    }

    /// Deserializes `args` into `T` (a JSON `null`, which some LLMs send for a tool without
    /// arguments, reads as `{}`); a mismatch is [`ToolError::InvalidArguments`] with serde's
    /// message and where it happened, for the LLM to correct itself.
    async fn call(&self, args: Value, cx: &ToolContext) -> Result<ToolOutput, ToolError> {
        let args = if args.is_null() {
            Value::Object(Map::new())
        } else {
            args
        };
        let parsed: T = serde_path_to_error::deserialize(args)
            .map_err(|e| ToolError::InvalidArguments(e.to_string()))?;
        (self.f)(parsed, cx.clone()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    /// Ask for the weather.
    #[derive(Debug, Deserialize, JsonSchema)]
    #[allow(dead_code)]
    struct GetWeather {
        /// City name
        location: String,
        /// Temperature unit
        #[serde(default)]
        unit: Unit,
        /// How many days ahead
        days: Option<u32>,
    }

    #[derive(Debug, Default, Deserialize, JsonSchema)]
    #[serde(rename_all = "lowercase")]
    enum Unit {
        #[default]
        C,
        F,
    }

    // A recursive type, which cannot be fully inlined (no doc comment: it would become a
    // description everywhere the type appears).
    #[derive(Deserialize, JsonSchema)]
    #[allow(dead_code)]
    struct Node {
        name: String,
        children: Vec<Node>,
    }

    #[derive(Deserialize, JsonSchema)]
    #[allow(dead_code)]
    struct Tree {
        root: Node,
    }

    fn spec(parameters: Value) -> ToolSpec {
        ToolSpec {
            name: "get_weather".into(),
            description: "Get the weather.".into(),
            parameters,
        }
    }

    #[test]
    fn parameters_schema_of_a_struct_is_a_plain_object_schema_with_doc_descriptions() {
        assert_eq!(
            parameters_schema::<GetWeather>().unwrap(),
            json!({
                "type": "object",
                "properties": {
                    "location": {"description": "City name", "type": "string"},
                    "unit": {"description": "Temperature unit", "type": "string", "enum": ["c", "f"]},
                    "days": {"description": "How many days ahead", "type": ["integer", "null"],
                             "format": "uint32", "minimum": 0},
                },
                "required": ["location"],
            })
        );
    }

    #[test]
    fn no_args_is_an_empty_object_schema_without_required() {
        assert_eq!(
            parameters_schema::<NoArgs>().unwrap(),
            json!({"type": "object", "properties": {}})
        );
    }

    #[test]
    fn a_type_that_is_not_a_struct_is_rejected() {
        assert!(matches!(
            parameters_schema::<String>(),
            Err(SchemaError::NotAnObject(_))
        ));
        assert!(matches!(
            parameters_schema::<()>(),
            Err(SchemaError::NotAnObject(_))
        ));
    }

    #[test]
    fn a_recursive_type_keeps_its_defs() {
        let s = parameters_schema::<Tree>().unwrap();
        assert_eq!(s["type"], "object");
        assert!(s.get("$schema").is_none());
        assert_eq!(
            s["properties"]["root"]["properties"]["children"],
            json!({"type": "array", "items": {"$ref": "#/$defs/Node"}})
        );
        assert!(s["$defs"]["Node"].is_object(), "{s}");
    }

    #[test]
    fn openai_chat_tool_nests_under_function() {
        let p = json!({"type": "object", "properties": {}});
        assert_eq!(
            openai_chat_tool(&spec(p.clone())),
            json!({"type": "function", "function": {
                "name": "get_weather", "description": "Get the weather.", "parameters": p}})
        );
    }

    #[test]
    fn openai_realtime_tool_is_flat_without_strict() {
        let p = json!({"type": "object", "properties": {"a": {"type": "string"}}});
        assert_eq!(
            openai_realtime_tool(&spec(p.clone())),
            json!({"name": "get_weather", "description": "Get the weather.",
                   "parameters": p, "type": "function"})
        );
    }

    #[test]
    fn anthropic_tool_uses_input_schema() {
        let p = json!({"type": "object", "properties": {}});
        assert_eq!(
            anthropic_tool(&spec(p.clone())),
            json!({"name": "get_weather", "description": "Get the weather.", "input_schema": p})
        );
    }

    #[test]
    fn a_missing_schema_encodes_as_an_empty_object_schema() {
        let empty = json!({"type": "object", "properties": {}});
        assert_eq!(
            openai_realtime_tool(&spec(Value::Null))["parameters"],
            empty
        );
        assert_eq!(
            openai_chat_tool(&spec(Value::Null))["function"]["parameters"],
            empty
        );
        assert_eq!(anthropic_tool(&spec(Value::Null))["input_schema"], empty);
    }

    /// The pydantic schema of `get_weather(location: str, unit: Literal["c","f"]="c",
    /// days: int = 3)` with docstring descriptions, as spec §1.2 describes it.
    fn pydantic_weather() -> Value {
        json!({
            "properties": {
                "location": {"description": "City name", "title": "Location", "type": "string"},
                "unit": {"default": "c", "description": "Temperature unit", "enum": ["c", "f"],
                         "title": "Unit", "type": "string"},
                "days": {"default": 3, "title": "Days", "type": "integer"},
            },
            "required": ["location"],
            "title": "GetWeatherArgs",
            "type": "object",
        })
    }

    #[test]
    fn gemini_simplifies_the_spec_example_exactly() {
        assert_eq!(
            simplify_gemini_schema(&pydantic_weather()).unwrap(),
            json!({"properties": {
                "location": {"description": "City name", "type": "STRING"},
                "unit": {"description": "Temperature unit", "enum": ["c", "f"], "type": "STRING"},
                "days": {"type": "INTEGER"}},
                "required": ["location"], "type": "OBJECT"})
        );
        assert_eq!(
            gemini_function_declaration(&spec(pydantic_weather())),
            json!({"name": "get_weather", "description": "Get the weather.",
                   "parameters": simplify_gemini_schema(&pydantic_weather()).unwrap()})
        );
    }

    #[test]
    fn gemini_zero_parameter_tool_has_no_parameters() {
        let none = json!({"name": "get_weather", "description": "Get the weather."});
        for p in [
            json!({"properties": {}, "title": "DoneBriefingArgs", "type": "object"}),
            json!({}),
            json!({"type": "object", "properties": null}),
            Value::Null,
        ] {
            assert_eq!(gemini_function_declaration(&spec(p)), none);
        }
    }

    #[test]
    fn gemini_drops_empty_objects_and_array_items_that_vanish() {
        let s = json!({"type": "object", "additionalProperties": false, "properties": {
            "opts": {"type": "object", "additionalProperties": {"type": "integer"}},
            "tags": {"type": "array", "items": {"type": "object", "properties": {}}},
            "name": {"type": "string", "title": "Name"},
        }});
        assert_eq!(
            simplify_gemini_schema(&s).unwrap(),
            json!({"type": "OBJECT", "properties": {
                "tags": {"type": "ARRAY"}, "name": {"type": "STRING"}}})
        );
    }

    #[test]
    fn gemini_prunes_required_of_dropped_properties_unlike_python() {
        let s = json!({"type": "object", "properties": {
            "a": {"type": "string"}, "b": {"type": "object"}}, "required": ["a", "b"]});
        assert_eq!(
            simplify_gemini_schema(&s).unwrap(),
            json!({"type": "OBJECT", "properties": {"a": {"type": "STRING"}}, "required": ["a"]})
        );
        let s = json!({"type": "object", "properties": {
            "a": {"type": "string"}, "b": {"type": "object"}}, "required": ["b"]});
        assert!(simplify_gemini_schema(&s)
            .unwrap()
            .get("required")
            .is_none());
    }

    #[test]
    fn gemini_resolves_refs_against_defs_instead_of_leaving_them_dangling() {
        let s = json!({
            "$defs": {"Unit": {"enum": ["c", "f"], "title": "Unit", "type": "string"}},
            "properties": {"unit": {"$ref": "#/$defs/Unit", "description": "Temperature unit"}},
            "type": "object",
        });
        assert_eq!(
            simplify_gemini_schema(&s).unwrap(),
            json!({"type": "OBJECT", "properties": {"unit": {
                "type": "STRING", "enum": ["c", "f"], "description": "Temperature unit"}}})
        );
    }

    #[test]
    fn gemini_drops_a_recursive_ref_instead_of_expanding_forever() {
        let node = json!({"type": "OBJECT", "properties": {
            "name": {"type": "STRING"}, "children": {"type": "ARRAY"}},
            "required": ["name", "children"]});
        // The inlined first level, then one expansion of the definition, then the recursion
        // is cut.
        let mut unrolled = node.clone();
        unrolled["properties"]["children"]["items"] = node.clone();
        let s = parameters_schema::<Tree>().unwrap();
        assert_eq!(
            simplify_gemini_schema(&s).unwrap(),
            json!({"type": "OBJECT", "properties": {"root": unrolled}, "required": ["root"]})
        );
        // A type referring to itself at the root (`"$ref": "#"`).
        let s = parameters_schema::<Node>().unwrap();
        assert_eq!(simplify_gemini_schema(&s).unwrap(), node);
    }

    #[test]
    fn gemini_simplifies_inside_any_of_and_marks_optional_nullable_unlike_python() {
        let s = json!({"type": "object", "properties": {
            "city": {"anyOf": [{"type": "string"}, {"type": "null"}], "default": null,
                     "title": "City"},
            "id": {"anyOf": [{"type": "string"}, {"type": "integer"}]},
            "days": {"type": ["integer", "null"], "format": "uint32", "minimum": 0},
        }});
        assert_eq!(
            simplify_gemini_schema(&s).unwrap(),
            json!({"type": "OBJECT", "properties": {
                "city": {"type": "STRING", "nullable": true},
                "id": {"anyOf": [{"type": "STRING"}, {"type": "INTEGER"}]},
                "days": {"type": "INTEGER", "nullable": true, "minimum": 0},
            }})
        );
    }

    #[test]
    fn gemini_turns_a_choice_of_string_constants_into_an_enum() {
        let s = json!({"type": "object", "properties": {"unit": {"oneOf": [
            {"type": "string", "const": "c", "description": "Celsius"},
            {"type": "string", "const": "f", "description": "Fahrenheit"}]}}});
        assert_eq!(
            simplify_gemini_schema(&s).unwrap(),
            json!({"type": "OBJECT", "properties": {"unit": {"type": "STRING", "enum": ["c", "f"]}}})
        );
    }

    #[test]
    fn gemini_keeps_formats_it_accepts() {
        let s = json!({"type": "object", "properties": {
            "x": {"type": "number", "format": "double"},
            "n": {"type": "integer", "format": "int64"},
            "t": {"type": "string", "format": "date-time"},
            "u": {"type": "string", "format": "uri"},
        }});
        assert_eq!(
            simplify_gemini_schema(&s).unwrap(),
            json!({"type": "OBJECT", "properties": {
                "x": {"type": "NUMBER", "format": "double"},
                "n": {"type": "INTEGER", "format": "int64"},
                "t": {"type": "STRING", "format": "date-time"},
                "u": {"type": "STRING"},
            }})
        );
    }

    #[test]
    fn gemini_accepts_a_schema_derived_from_a_rust_type() {
        let s = parameters_schema::<GetWeather>().unwrap();
        assert_eq!(
            simplify_gemini_schema(&s).unwrap(),
            json!({
                "type": "OBJECT",
                "properties": {
                    "location": {"description": "City name", "type": "STRING"},
                    "unit": {"description": "Temperature unit", "type": "STRING", "enum": ["c", "f"]},
                    "days": {"description": "How many days ahead", "type": "INTEGER",
                             "nullable": true, "minimum": 0},
                },
                "required": ["location"],
            })
        );
    }

    #[test]
    fn nova_sonic_matches_the_spec_example_byte_for_byte() {
        let t = ToolSpec {
            name: "done_briefing".into(),
            description: String::new(),
            parameters: json!({"properties": {}, "title": "DoneBriefingArgs", "type": "object"}),
        };
        assert_eq!(
            nova_sonic_tool(&t),
            json!({"toolSpec": {"name": "done_briefing", "description": "done_briefing",
                "inputSchema": {"json":
                    "{\"properties\": {}, \"title\": \"DoneBriefingArgs\", \"type\": \"object\"}"}}})
        );
    }

    #[test]
    fn python_json_dumps_escapes_like_python() {
        let mut out = String::new();
        python_json_dumps(
            &json!({"b": [1, 2.5, true, null], "a": "é😀\"\\\n\u{7f}"}),
            &mut out,
        );
        assert_eq!(
            out,
            r#"{"a": "\u00e9\ud83d\ude00\"\\\n\u007f", "b": [1, 2.5, true, null]}"#
        );
    }

    fn weather_tool() -> FnTool<
        GetWeather,
        impl Fn(GetWeather, ToolContext) -> std::future::Ready<Result<ToolOutput, ToolError>>,
    > {
        FnTool::new(
            "get_weather",
            "Get the weather.",
            |args: GetWeather, _cx| {
                std::future::ready(Ok(ToolOutput::Text(format!(
                    "{} {:?} {:?}",
                    args.location, args.unit, args.days
                ))))
            },
        )
        .unwrap()
    }

    #[tokio::test]
    async fn fn_tool_deserializes_arguments_and_runs() {
        let tool = weather_tool();
        assert_eq!(
            tool.spec().parameters,
            parameters_schema::<GetWeather>().unwrap()
        );
        let out = tool
            .call(
                json!({"location": "Oslo", "days": 2}),
                &ToolContext::default(),
            )
            .await
            .unwrap();
        assert!(matches!(out, ToolOutput::Text(t) if t == "Oslo C Some(2)"));
    }

    #[tokio::test]
    async fn fn_tool_rejects_bad_arguments_with_serdes_message() {
        let tool = weather_tool();
        let err = tool
            .call(json!({"days": 2}), &ToolContext::default())
            .await
            .unwrap_err();
        assert!(
            matches!(&err, ToolError::InvalidArguments(m) if m.contains("missing field `location`")),
            "{err:?}"
        );
        let err = tool
            .call(
                json!({"location": "Oslo", "unit": "k"}),
                &ToolContext::default(),
            )
            .await
            .unwrap_err();
        assert!(
            matches!(&err, ToolError::InvalidArguments(m) if m.starts_with("unit: unknown variant `k`")),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn fn_tool_without_arguments_accepts_null() {
        let tool = FnTool::new("hang_up", "End the call.", |_: NoArgs, _cx| async {
            Ok(ToolOutput::Text("bye".into()))
        })
        .unwrap();
        assert_eq!(
            tool.spec().parameters,
            json!({"type": "object", "properties": {}})
        );
        for args in [Value::Null, json!({})] {
            let out = tool.call(args, &ToolContext::default()).await.unwrap();
            assert!(matches!(out, ToolOutput::Text(t) if t == "bye"));
        }
    }
}
